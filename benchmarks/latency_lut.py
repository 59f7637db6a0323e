"""Latency lookup table benchmark: build time, prediction speed, and accuracy against networks
timed end to end (V3-Large space, CPU, 1 thread, batch 1, 224x224 by default).

    python benchmarks/latency_lut.py                     # full space table, 30 validation specs
    python benchmarks/latency_lut.py --layers needed     # only the layers the specs need (faster)
    python benchmarks/latency_lut.py --timer thread_cpu  # on a busy shared machine
    python benchmarks/latency_lut.py --drift-correction both  # with and without, side by side
    python benchmarks/latency_lut.py --runtime onnxruntime  # ONNX Runtime tables and networks
    python benchmarks/latency_lut.py --threads 2 --batch 8  # other protocols

The validation fits scale and overhead on the fit networks timed alongside the validation
networks and also reports the figures with the table's stored fit. Then the validation
networks (none used for any fit) are timed by the plain loop a user would write
(``benchmarks/stopwatch.py``, in a fresh process: warm-up, median of wall-clock runs), twice with
glibc's allocator kept steady as the protocol keeps it (through glibc's environment variables)
and once with glibc's defaults, and the protocol's ``measure`` figures and the table's
predictions are compared with the first, absolute (share within +-10%) and ranking (Spearman),
side by side: against the stopwatch's runs while the machine was quiet, and against all its
runs. The second steady run against the first is the plain loop's own repeatability. Prints
the figures; writes report.json, stopwatch*.json and validation.png to --out. Takes 3-6
minutes (twice that with --drift-correction both).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from evaluators.latency import (
    LatencyProtocol,
    LatencyTable,
    ValidationReport,
    plot_validation,
    space_fit_specs,
    validate_table,
)
from search_spaces.config import SpaceConfig, build_space
from search_spaces.serialize import to_dict
from search_spaces.space import sample_specs

STOPWATCH = Path(__file__).with_name("stopwatch.py")
# glibc reads these at start-up: the protocol's steady allocator (evaluators.latency.measure) without code
STEADY_ALLOCATOR = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(32 << 20)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--space", default="mobilenet_v3_large", help="seed of the space (reference name)")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--specs", type=int, default=30, help="validation specs")
    parser.add_argument("--fit-specs", type=int, default=8, help="networks timed to fit the overhead")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds when timing networks")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--timer", default="wall", choices=("wall", "thread_cpu"))
    parser.add_argument("--runtime", default="torch", choices=("torch", "onnxruntime"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--no-stopwatch", action="store_true", help="skip the plain-loop comparison")
    parser.add_argument(
        "--drift-correction",
        default="reference",
        choices=("reference", "none", "both"),
        help="both: a table and a validation with each, side by side",
    )
    parser.add_argument(
        "--layers",
        default="space",
        choices=("space", "needed"),
        help="build every layer of the space, or only those of the fit/validation specs",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", default=None, help="table file (default: a fresh one in a temp dir)")
    parser.add_argument("--out", default="runs/bench_latency_lut", help="where report.json and the plot go")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corrections = ("reference", "none") if args.drift_correction == "both" else (args.drift_correction,)
    reports = {c: run(args, c) for c in corrections}
    if len(reports) > 1:
        print("\nside by side (same specs, same machine, one run):")
        print(f"{'drift correction':<18}{'fit':<8}{'MAPE':>8}{'within 10%':>12}{'Spearman':>10}")
        for correction, report in reports.items():
            for r in (report, report.table_fit_report()):
                print(
                    f"{correction:<18}{r.fit_source:<8}{100 * r.mape:>7.1f}%{100 * r.within_10:>11.0f}%"
                    f"{r.spearman:>10.3f}"
                )


def run(args: argparse.Namespace, drift_correction: str) -> ValidationReport:
    """Build (or extend) a table under one protocol, fit it, time predictions, validate."""
    space = build_space(SpaceConfig(seed=args.space), num_classes=1000, resolution=args.resolution)
    protocol = LatencyProtocol(
        device="cpu",
        threads=args.threads,
        batch_size=args.batch,
        runtime=args.runtime,
        resolution=args.resolution,
        warmup=args.warmup,
        runs=args.runs,
        timer=args.timer,
        drift_correction=drift_correction,
    )
    print(f"protocol: {protocol.describe()}")
    print(
        f"space: {args.space}, {space.size():.3e} architectures, {len(list(space.layers()))} distinct layers"
    )
    path = Path(args.table) if args.table else Path(tempfile.mkdtemp()) / "table.json"
    if args.drift_correction == "both":  # one table per protocol
        path = path.with_name(f"{path.stem}-{drift_correction}{path.suffix}")
    table = LatencyTable.open(path, protocol, create=True)

    fitting = space_fit_specs(space, args.fit_specs, seed=args.seed)
    specs = sample_specs(space, args.specs, seed=args.seed, exclude=fitting)
    layers = (
        list(space.layers()) if args.layers == "space" else [ly for s in fitting + specs for ly in s.layers()]
    )
    start = time.perf_counter()
    built = table.build(layers, progress=True)
    build_s = time.perf_counter() - start
    print(
        f"build: {built} layers measured in {build_s:.1f} s "
        f"({1e3 * build_s / max(built, 1):.1f} ms per layer); "
        f"table {len(table)} rows, {path.stat().st_size / 1024:.0f} KiB"
    )

    start = time.perf_counter()
    fit = table.fit_overhead(fitting, rounds=3, progress=True)
    print(
        f"fit: {fit.n_specs} networks in {time.perf_counter() - start:.1f} s: "
        f"predicted = {fit.scale:.3f} x sum "
        f"+ {fit.overhead_ms:.3f} ms (rmse {fit.rmse_ms:.3f} ms)"
    )

    probe = fitting + specs
    cold = LatencyTable.read(path)  # rows loaded, prediction caches empty
    start = time.perf_counter()
    for spec in probe:
        cold.predict_ms(spec)
    cold_us = 1e6 * (time.perf_counter() - start) / len(probe)
    repeats = 20_000 // len(probe) + 1
    start = time.perf_counter()
    for _ in range(repeats):
        for spec in probe:
            cold.predict_ms(spec)
    warm_s = (time.perf_counter() - start) / (repeats * len(probe))
    print(
        f"predict: {cold_us:.1f} us per new spec (rows present), {1e6 * warm_s:.2f} us per cached spec "
        f"= {1 / warm_s:,.0f} predictions/s"
    )

    report = validate_table(table, specs, fit_specs=fitting, rounds=args.rounds, progress=True)
    out = Path(args.out) / drift_correction if args.drift_correction == "both" else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    plot_validation(report, out / "validation.png")
    print(f"validation: {report.summary()} ({report.seconds:.0f} s)")
    print(
        f"  fit on the {len(fitting)} fit networks timed alongside: {report.fit.scale:.3f} x sum "
        f"+ {report.fit.overhead_ms:.3f} ms"
    )
    stored = report.table_fit_report()
    print(f"  with the table's stored fit (timed minutes earlier) instead: {stored.summary()}")
    print(
        f"targets: within +-10% >= 95% {'met' if report.within_10 >= 0.95 else 'NOT met'}; "
        f"Spearman >= 0.95 {'met' if report.spearman >= 0.95 else 'NOT met'}"
    )
    print(f"report: {out / 'report.json'}, plot: {out / 'validation.png'}")
    if not args.no_stopwatch:
        compare_with_stopwatch(args, report, specs, out)
    return report


def compare_with_stopwatch(
    args: argparse.Namespace, report: ValidationReport, specs: list, out: Path
) -> None:
    """Time ``specs`` with the plain loop in a fresh process, twice (its own repeatability is
    the floor of any agreement), and print how the protocol's figures and the table's
    predictions compare with the first run."""
    (out / "specs.json").write_text(json.dumps([to_dict(s) for s in specs]))
    start = time.perf_counter()
    quiet, everything, share = plain_loop(args, out, "stopwatch.json", STEADY_ALLOCATOR)
    quiet2, everything2, _ = plain_loop(args, out, "stopwatch2.json", STEADY_ALLOCATOR)
    quiet_glibc, everything_glibc, _ = plain_loop(args, out, "stopwatch-glibc.json", {})
    seconds = time.perf_counter() - start
    print(f"\nplain loop ({STOPWATCH.name}, a fresh process with the protocol's steady allocator, run twice; "
          f"once with glibc's defaults; {seconds:.0f} s): "
          f"{len(specs)} held-out networks, {100 * share:.0f}% of its groups ran while the machine was quiet")
    stored = report.table_fit_report() or report
    rows = [("plain loop again", quiet2, everything2),
            ("plain, glibc default", quiet_glibc, everything_glibc),
            ("measure (protocol)", report.measured_ms, None),
            ("LUT, table's fit", stored.predicted_ms, None),
            ("LUT, fit alongside", report.predicted_ms, None)]
    print(f"{'figure':<22}{'vs plain loop':<16}{'median ratio':>13}{'within 10%':>12}{'Spearman':>10}")
    for name, figures, figures_all in rows:
        for label, truth, mine in (("quiet runs", quiet, figures), ("all runs", everything, figures_all)):
            mine = np.asarray(figures if mine is None else mine)
            keep = np.isfinite(truth) & np.isfinite(mine)
            ratio = mine[keep] / truth[keep]
            rho = spearmanr(mine[keep], truth[keep])[0] if keep.sum() > 1 else float("nan")
            within = 100 * np.mean(abs(ratio - 1) <= 0.10)
            print(f"{name:<22}{label:<16}{np.median(ratio):>13.3f}{within:>11.0f}%{rho:>10.3f}")
    lut = np.asarray(stored.predicted_ms) / quiet
    verdict = np.mean(abs(lut - 1) <= 0.10) >= 0.95 and spearmanr(stored.predicted_ms, quiet)[0] >= 0.95
    print("target (LUT with the table's fit vs the quiet plain loop, steady allocator: >= 95% within +-10%, "
          "Spearman >= 0.95): "
          + ("met" if verdict else "NOT met"))


def plain_loop(args: argparse.Namespace, out: Path, name: str,
               env: dict[str, str]) -> tuple[np.ndarray, np.ndarray, float]:
    """The stopwatch's (quiet-run, all-run) medians per spec and its share of quiet groups, run with
    ``env`` added to the environment."""
    subprocess.run(
        [sys.executable, str(STOPWATCH), str(out / "specs.json"), str(out / name),
         "--runtime", args.runtime, "--threads", str(args.threads), "--batch", str(args.batch),
         "--warmup", str(args.warmup), "--runs", str(args.runs), "--rounds", str(args.rounds)],
        check=True, env={**os.environ, **env},
    )
    plain = json.loads((out / name).read_text())
    return (np.array([p["quiet_ms"] for p in plain]), np.array([p["all_ms"] for p in plain]),
            float(np.mean([p["quiet_share"] for p in plain])))


if __name__ == "__main__":
    main()
