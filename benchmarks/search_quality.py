"""Search quality: does the supernet-driven search beat MobileNetV3 at equal latency? (Fashion-MNIST, 32x32)

The target is the latency of MobileNetV3-Small x0.75 in the V3-Small space at 32x32, predicted by the
search's own lookup table (eager PyTorch, 1 thread, batch 1; timed as thread CPU time, which a busy
machine disturbs least). ``mobilenas search`` runs ``--trials`` trials on a trained supernet (the accuracy
predictor, with the supernet confirming the top candidates; hard objective), without NetAdapt. Its winner,
V3-Small x0.75, V3-Small x1.0 and 3 random architectures of the space under the same latency are then
trained stand-alone with one budget and two seeds each (the same budget as ``supernet_fidelity.py``, top-1
on the 10,000-image test split). The table gives each network's latency, its share of the budget and its
top-1 per seed; the verdict compares the winner with the best of the others against the seed spread.

    python benchmarks/search_quality.py --supernet runs/bench/fidelity/supernet --out runs/bench/quality
    python benchmarks/search_quality.py --out /tmp/quality --trials 50 --epochs 1 --train-images 2000 \\
        --supernet-epochs 1 --predictor-samples 20     # a few minutes (trains its own tiny supernet)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from standalone import (
    FASHION,
    RESOLUTION,
    Budget,
    StandaloneRuns,
    fashion_data,
    key,
    run_logged,
    small_space,
    supernet_command,
    supernet_ready,
)

from evaluators.cost import count_cost
from evaluators.data import load_dataset
from evaluators.latency import LatencyConfig, latency_evaluator
from evaluators.latency.measure import measure_many
from search_spaces import serialize
from search_spaces.printout import format_columns
from search_spaces.reference import reference_spec
from search_spaces.space import SearchSpace, sample_specs
from search_spaces.spec import ArchSpec

LATENCY = LatencyConfig(timer="thread_cpu")


def random_under(space: SearchSpace, predict: Any, target_ms: float, count: int, seed: int) -> list[ArchSpec]:
    """The first ``count`` random specs of the space (seeded) predicted at or under ``target_ms``."""
    found: list[ArchSpec] = []
    for batch in range(100):
        for spec in sample_specs(space, 100, seed=seed + batch, exclude=found):
            if predict(spec) <= target_ms:
                found.append(spec)
                if len(found) == count:
                    return found
    raise SystemExit(f"fewer than {count} random specs under {target_ms:.3f} ms in 10,000 samples")


def run_search(out: Path, args: argparse.Namespace, supernet: Path, target_ms: float,
               tables: Path) -> ArchSpec:
    """``mobilenas search`` on the supernet; its winner (the run is resumed if ``out`` holds one)."""
    run_dir = out / "search"
    argv = [sys.executable, "-m", "search", "search", "space=v3_small", "data=fashion_mnist",
            f"data.root={args.data_root}", f"data.train_subset={args.train_images}",
            f"data.val_subset={args.val_images or 'null'}", f"proxy={args.proxy}",
            f"proxy.supernet={supernet}",
            f"proxy.predictor_samples={args.predictor_samples}", "objective=hard",
            f"objective.target_ms={target_ms}", f"study.n_trials={args.trials}",
            f"study.workers={args.search_workers}", "study.name=quality", "refine=false", "export=false",
            f"latency.timer={LATENCY.timer}", f"latency.tables_dir={tables}", f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    run_logged(argv, out / "search.log")
    print(f"search: {args.trials} trials in {(time.perf_counter() - started) / 60:.1f} min "
          f"(log: {out / 'search.log'})", flush=True)
    return serialize.load_spec_file(run_dir / "winner.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/quality"))
    parser.add_argument("--supernet", type=Path, default=Path("runs/bench/fidelity/supernet"),
                        help="a supernet run dir trained on the same data (trained here when absent)")
    parser.add_argument("--data-root", type=Path, default=FASHION)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--proxy", choices=("predictor", "supernet"), default="predictor")
    parser.add_argument("--search-workers", type=int, default=1)
    parser.add_argument("--predictor-samples", type=int, default=200)
    parser.add_argument("--random", type=int, default=3, help="random architectures under the target")
    parser.add_argument("--epochs", type=int, default=10, help="stand-alone budget")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--train-images", type=int, default=10_000)
    parser.add_argument("--val-images", type=int, default=2_000,
                        help="the validation split; the search's supernet scores see all of it "
                        "(conf/proxy/<kind>.yaml); 0: the whole split (6,000 images)")
    parser.add_argument("--supernet-epochs", type=int, default=12, help="when the supernet is trained here")
    parser.add_argument("--jobs", type=int, default=2, help="training processes (1 thread each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.random < 1 or args.val_images < 0:
        parser.error("--random must be >= 1 and --val-images >= 0")
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    args.data_root = args.data_root.resolve()
    data = fashion_data(args.data_root, train_images=args.train_images, val_images=args.val_images or None)
    splits = load_dataset(data)
    budget = Budget(args.epochs, args.batch, args.lr)
    space = small_space(splits.num_classes)
    print(f"torch {torch.__version__}; V3-Small space at 32x32; stand-alone: {budget.describe(splits)}",
          flush=True)
    if not supernet_ready(args.supernet):
        print(f"training a supernet into {args.supernet} ({args.supernet_epochs} epochs)", flush=True)
        run_logged(supernet_command(args.supernet, data, epochs=args.supernet_epochs, batch_size=args.batch,
                                    lr=args.lr, threads=args.jobs), args.out / "supernet.log")

    tables = (args.out / "tables").resolve()
    predict = latency_evaluator(LatencyConfig(timer=LATENCY.timer, tables_dir=str(tables)), RESOLUTION)
    v3 = {f"V3-Small x{w}": reference_spec("mobilenet_v3_small", width_mult=w, num_classes=splits.num_classes,
                                           resolution=RESOLUTION) for w in (0.75, 1.0)}
    target_ms = predict(v3["V3-Small x0.75"])
    print(f"target: {target_ms:.3f} ms (V3-Small x0.75, {predict.describe()})", flush=True)
    winner = run_search(args.out, args, args.supernet.resolve(), target_ms, tables)
    randoms = random_under(space, predict, target_ms, args.random, args.seed + 1000)
    networks = {"search winner": winner, **v3, **{f"random {i + 1}": s for i, s in enumerate(randoms)}}
    seeds = (args.seed, args.seed + 1)
    runs = StandaloneRuns(args.out / "standalone.json", data, budget, jobs=args.jobs, threads=1)

    def progress(name: str, result: dict[str, Any]) -> None:
        print(f"  {name[:60]}: top-1 {result['top1']:.4f} in {result['seconds']:.0f} s", flush=True)

    results = runs.run([(spec, seed) for spec in networks.values() for seed in seeds], on_result=progress)
    report(networks, results, seeds, predict, target_ms, args, time.perf_counter() - started)


def report(networks: dict[str, ArchSpec], results: dict[str, dict[str, Any]], seeds: tuple[int, int],
           predict: Any, target_ms: float, args: argparse.Namespace, seconds: float) -> None:
    torch.set_num_threads(1)
    measured = measure_many(list(networks.values()), predict.protocol, rounds=3)
    means, rows, gaps = {}, [], []
    for (name, spec), timed in zip(networks.items(), measured, strict=True):
        top1 = [results[key(spec, seed)]["top1"] for seed in seeds]
        means[name] = statistics.mean(top1)
        gaps.append(abs(top1[0] - top1[1]))
        ms = predict(spec)
        cost = count_cost(spec)
        rows.append((name, f"{ms:.3f}", f"{timed.ms:.3f}", f"{ms / target_ms:.0%}",
                     f"{cost.params / 1e6:.2f}", f"{cost.madds / 1e6:.2f}", *(f"{t:.4f}" for t in top1),
                     f"{means[name]:.4f}"))
    print(f"\ntarget {target_ms:.3f} ms (V3-Small x0.75); stand-alone, seeds {seeds[0]} and {seeds[1]}")
    print(format_columns(("network", "LUT ms", "timed ms", "budget", "params M", "MAdds M",
                          f"seed {seeds[0]}", f"seed {seeds[1]}", "mean"), rows))
    randoms = {n: m for n, m in means.items() if n.startswith("random")}
    best_random = max(randoms, key=randoms.__getitem__)
    spread = max(gaps)
    print(f"seed spread (largest |seed {seeds[0]} - seed {seeds[1]}| above): {spread:.4f}; "
          f"best random: {best_random}")
    for rival in ("V3-Small x0.75", "V3-Small x1.0", best_random):
        margin = means["search winner"] - means[rival]
        verdict = "beats it by more than the seed spread" if margin > spread else (
            "ahead, within the seed spread" if margin > 0 else "does not beat it")
        print(f"  winner vs {rival}: {margin:+.4f} -> {verdict}")
    print(f"wall time {seconds / 60:.1f} min")
    serialize.atomic_write_text(args.out / "quality.json", json.dumps({
        "target_ms": target_ms, "networks": {n: str(s) for n, s in networks.items()}, "mean_top1": means,
        "seed_spread": spread, "wall_s": seconds}, indent=1))


if __name__ == "__main__":
    main()
