"""Latency lookup table benchmark: build time, prediction speed, and accuracy against networks
timed end to end (V3-Large space, CPU, 1 thread, batch 1, 224x224 by default).

    python benchmarks/latency_lut.py                     # full space table, 30 validation specs
    python benchmarks/latency_lut.py --layers needed     # only the layers the specs need (faster)
    python benchmarks/latency_lut.py --timer thread_cpu  # on a busy shared machine
    python benchmarks/latency_lut.py --drift-correction both  # with and without, side by side

The validation fits scale and overhead on the fit networks timed alongside the validation
networks and also reports the figures with the table's stored fit.
Prints the figures; writes report.json and validation.png to --out. Takes 3-6 minutes (twice
that with --drift-correction both).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from evaluators.latency import (
    LatencyProtocol,
    LatencyTable,
    ValidationReport,
    plot_validation,
    space_fit_specs,
    validate_table,
)
from search_spaces.config import SpaceConfig, build_space
from search_spaces.space import sample_specs


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
    torch.set_num_threads(1)
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
        threads=1,
        batch_size=1,
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
    return report


if __name__ == "__main__":
    main()
