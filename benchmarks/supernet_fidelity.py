"""Supernet fidelity: how well cheap scores rank architectures trained stand-alone (Fashion-MNIST, 32x32).

V3-Small space at 32x32. ``--archs`` architectures spread over the space's latency range (its smallest
and largest sub-networks, and networks at evenly spaced latency quantiles of ``--pool`` random ones) are
each trained stand-alone from scratch with one budget (default 10 epochs of 10,000 images, top-1 on the
10,000-image test split), a second seed on every other one (the seed spread), while a supernet is trained
on the same images (``mobilenas supernet``: sandwich rule, in-place distillation). Every architecture is
then scored the ways a search can score it, each exactly as ``mobilenas search proxy=...`` builds it:
the supernet (batch norm re-estimated, top-1 on the validation images), the accuracy predictor (an MLP
fitted on ``--predictor-samples`` random sub-networks' supernet scores), a 100-step proxy training,
NASWOT, SynFlow, and parameter count and MAdds. One table gives the Spearman and Kendall tau of each
against the stand-alone top-1 (mean over seeds). Everything lands in ``--out`` (stand-alone results,
the supernet run dir, each column's scores with the settings they were computed with, ``fidelity.json``);
a rerun resumes a killed one and recomputes only the columns whose settings changed: e.g. rescoring an
existing run on the whole validation split (``--val-images 0``) or with other supernet scoring options
(``--supernet-proxy calib_batches=32``) trains nothing.

    python benchmarks/supernet_fidelity.py --out runs/bench/fidelity          # about an hour on 2 cores
    python benchmarks/supernet_fidelity.py --out /tmp/fid --archs 6 --second-seed 2 --epochs 1 \\
        --train-images 2000 --supernet-epochs 1 --predictor-samples 20 --pool 30   # a few minutes
    python benchmarks/supernet_fidelity.py --out runs/bench/fidelity --val-images 0   # rescore: ~10 minutes
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from scipy.stats import kendalltau, spearmanr
from standalone import (
    FASHION,
    Budget,
    StandaloneRuns,
    fashion_data,
    key,
    small_space,
    supernet_command,
    supernet_ready,
)

from evaluators.accuracy import ProxyConfig
from evaluators.accuracy.config import SUPERNET_KINDS
from evaluators.accuracy.factory import accuracy_evaluator, proxy_data_config
from evaluators.cost import count_cost
from evaluators.data import DataConfig, DatasetSplits, load_dataset
from evaluators.latency import LatencyProtocol
from evaluators.latency.measure import measure_many
from evaluators.supernet import SuperNet
from evaluators.training import TrainConfig
from search.schema import compose_options
from search_spaces import serialize
from search_spaces.printout import format_columns
from search_spaces.space import SearchSpace, sample_specs
from search_spaces.spec import ArchSpec

# training-time spread only: eager PyTorch, 1 thread, batch 1, CPU time of the measuring thread
SPREAD_PROTOCOL = LatencyProtocol(resolution=32, timer="thread_cpu", runs=20, warmup=5)


def spread_over_latency(space: SearchSpace, count: int, pool: int, seed: int) -> list[tuple[ArchSpec, float]]:
    """The space's smallest and largest sub-networks and ``count - 2`` random ones at evenly spaced latency
    quantiles of ``pool`` samples, fastest first, with their latencies (ms)."""
    supernet = SuperNet(space)
    corners = [supernet.smallest(), supernet.largest()]
    candidates = corners + sample_specs(space, pool, seed=seed, exclude=corners)
    latencies = [r.ms for r in measure_many(candidates, SPREAD_PROTOCOL, progress=True, desc="latency")]
    timed = sorted(zip(candidates[2:], latencies[2:], strict=True), key=lambda pair: pair[1])
    inner = count - 2
    picks = [timed[round((i + 1) * (len(timed) - 1) / (inner + 1))] for i in range(inner)]
    return [(corners[0], latencies[0]), *picks, (corners[1], latencies[1])]


def chosen_architectures(out: Path, space: SearchSpace,
                         args: argparse.Namespace) -> list[tuple[ArchSpec, float]]:
    """The architectures of this run (``archs.json``, so a rerun trains the same ones)."""
    path = out / "archs.json"
    selection = {"archs": args.archs, "pool": args.pool, "seed": args.seed}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["selection"] != selection:
            raise SystemExit(f"error: {path} holds another selection ({saved['selection']}); "
                             "use another --out")
        return [(serialize.from_dict(a["spec"]), a["latency_ms"]) for a in saved["archs"]]
    chosen = spread_over_latency(space, args.archs, args.pool, args.seed)
    serialize.atomic_write_text(path, json.dumps({"selection": selection, "archs": [
        {"spec": serialize.to_dict(s), "latency_ms": ms} for s, ms in chosen]}, indent=1))
    return chosen


def column_proxies(supernet_dir: Path,
                   args: argparse.Namespace) -> tuple[dict[str, ProxyConfig], TrainConfig]:
    """Each scored column's proxy and the proxy training's trainer, as ``mobilenas search proxy=<kind>``
    composes them (``conf/proxy/<kind>.yaml`` on the search's defaults: supernet scores on the whole
    validation split, the proxy training 100 steps), plus the benchmark's settings; ``--supernet-proxy``
    overrides go to the supernet and predictor columns."""
    mine = [f"proxy.{item}" for item in args.supernet_proxy]
    columns = {"supernet": ["proxy=supernet", *mine],
               "predictor": ["proxy=predictor", "proxy.predictor_confirm=0.0",
                             f"proxy.predictor_samples={args.predictor_samples}", *mine],
               "proxy 100 steps": ["proxy=train", "proxy.reports=1"],
               "naswot": ["proxy=naswot"], "synflow": ["proxy=synflow"]}
    proxies = {}
    for name, overrides in columns.items():
        proxy = compose_options("search", overrides).proxy
        proxies[name] = replace(proxy, supernet=str(supernet_dir)) if proxy.kind in SUPERNET_KINDS else proxy
    trainer = replace(compose_options("search").trainer, progress=False)
    return proxies, trainer


PREDICTOR_SEED_OFFSET = 1000


class ScoreCache:
    """Each column's scores in ``path`` with the settings they were computed with: a rerun recomputes a
    column only when its proxy, the images it sees, the trainer, the seed or the specs changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, name: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        saved = self.columns.get(name)
        return saved if saved is not None and saved["settings"] == settings else None

    def put(self, name: str, settings: dict[str, Any], result: dict[str, Any]) -> None:
        self.columns[name] = {"settings": settings, **result}
        serialize.atomic_write_text(self.path, json.dumps(self.columns, indent=1))


def score_column(name: str, proxy: ProxyConfig, specs: list[ArchSpec], data: DataConfig, trainer: TrainConfig,
                 seed: int) -> dict[str, Any]:
    """``{"scores": [...], "seconds": per spec, "extra": {...}}`` of one column (the predictor's held-out
    figures and start-up time in ``extra``)."""
    started = time.perf_counter()
    evaluator = accuracy_evaluator(proxy, data, trainer, seed=seed)
    extra: dict[str, Any] = {}
    if name == "predictor":
        held_out = evaluator.held_out  # type: ignore[union-attr]
        samples = sample_specs(evaluator.net.space, proxy.predictor_samples, seed=seed)  # type: ignore[union-attr]
        extra = {"predictor_held_out": vars(held_out), "predictor_start_s": time.perf_counter() - started,
                 "predictor_samples_among_archs": len(set(samples) & set(specs))}
        print(f"  predictor: fitted on {int(0.8 * proxy.predictor_samples)} supernet scores in "
              f"{extra['predictor_start_s']:.0f} s; held out {held_out}; "
              f"{extra['predictor_samples_among_archs']} of its samples are benchmark architectures",
              flush=True)
        started = time.perf_counter()
    scores = [evaluator.evaluate(spec).accuracy for spec in specs]
    splits = getattr(evaluator, "data", None)  # the images a supernet score or the proxy training sees
    return {"scores": scores, "seconds": (time.perf_counter() - started) / len(specs), "extra": extra,
            "val_images": len(splits.val) if isinstance(splits, DatasetSplits) else None}


def cheap_scores(specs: list[ArchSpec], data: DataConfig, supernet_dir: Path,
                 args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, float], dict[str, Any]]:
    """Each column's score of every spec, its seconds per spec, and the predictor's held-out figures and
    what each column was computed with (columns computed by an earlier run with the same settings are
    read back from ``scores.json``)."""
    proxies, trainer = column_proxies(supernet_dir, args)
    cache = ScoreCache(args.out / "scores.json")
    scores: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    extra: dict[str, Any] = {"columns": {}}
    for name, proxy in proxies.items():
        # the predictor samples its sub-networks with its seed, as the pool was drawn with args.seed:
        # with the same seed, 5 of the 16 architectures were among the predictor's own training samples
        seed = args.seed + PREDICTOR_SEED_OFFSET if name == "predictor" else args.seed
        settings = {"proxy": asdict(proxy), "data": asdict(proxy_data_config(proxy, data)),
                    "trainer": asdict(trainer), "seed": seed, "specs": [str(s) for s in specs]}
        result = cache.get(name, settings)
        if result is None:
            result = score_column(name, proxy, specs, data, trainer, seed)
            cache.put(name, settings, result)
            how = "scored"
        else:
            how = f"read back from {cache.path}"
        scores[name], seconds[name] = result["scores"], result["seconds"]
        extra.update(result["extra"])
        extra["columns"][name] = {"val_images": result["val_images"], "proxy": asdict(proxy)}
        print(f"  {name}: {seconds[name]:.2f} s per architecture ({how}; validation images: "
              f"{result['val_images']})", flush=True)
    costs = [count_cost(spec) for spec in specs]
    scores["params"] = [float(c.params) for c in costs]
    scores["MAdds"] = [float(c.madds) for c in costs]
    return scores, seconds, extra


def seed_spread(results: dict[str, dict[str, Any]], specs: list[ArchSpec],
                seeds: tuple[int, int]) -> dict[str, Any]:
    pairs = [(results[key(s, seeds[0])]["top1"], results[key(s, seeds[1])]["top1"])
             for s in specs if key(s, seeds[1]) in results]
    gaps = [abs(a - b) for a, b in pairs]
    return {"networks": len(pairs), "mean_abs_gap": statistics.mean(gaps) if gaps else float("nan"),
            "max_abs_gap": max(gaps, default=float("nan")),
            "spearman_seed_vs_seed": float(spearmanr(*zip(*pairs))[0]) if len(pairs) > 2 else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/fidelity"))
    parser.add_argument("--data-root", type=Path, default=FASHION)
    parser.add_argument("--archs", type=int, default=16, help="architectures trained stand-alone")
    parser.add_argument("--second-seed", type=int, default=8, help="of them trained again with a second seed")
    parser.add_argument("--pool", type=int, default=300, help="random sub-networks timed to pick from")
    parser.add_argument("--epochs", type=int, default=10, help="stand-alone budget")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--train-images", type=int, default=10_000)
    parser.add_argument("--val-images", type=int, default=2_000,
                        help="the validation images supernet scores see (proxy training, NASWOT and "
                        "SynFlow: the first 500 of them); 0: the whole split (6,000 images)")
    parser.add_argument("--supernet-proxy", action="append", default=[], metavar="KEY=VALUE",
                        help="a proxy.KEY=VALUE override of the supernet and predictor columns, as "
                        "'mobilenas search' takes it (e.g. calib_batches=32, train_subset=null); repeatable")
    parser.add_argument("--supernet-epochs", type=int, default=12)
    parser.add_argument("--predictor-samples", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2, help="training processes (1 thread each)")
    parser.add_argument("--score-threads", type=int, default=1, help="threads of the scoring phase")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.archs < 3 or not 0 <= args.second_seed <= (args.archs + 1) // 2:
        parser.error("--archs must be >= 3 and --second-seed in [0, ceil(archs / 2)] (every other one)")
    if args.val_images < 0:
        parser.error("--val-images must be >= 0 (0: the whole validation split)")
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    data = fashion_data(args.data_root, train_images=args.train_images, val_images=args.val_images or None)
    splits = load_dataset(data)
    budget = Budget(args.epochs, args.batch, args.lr)
    space = small_space(splits.num_classes)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; V3-Small space at 32x32; "
          f"stand-alone: {budget.describe(splits)}; {len(splits.val)} validation images", flush=True)

    chosen = chosen_architectures(args.out, space, args)
    specs = [spec for spec, _ in chosen]
    seeds = (args.seed, args.seed + 1)
    pairs = [(s, seeds[0]) for s in specs] + [(s, seeds[1]) for s in specs[::2][:args.second_seed]]
    supernet_dir = args.out / "supernet"
    commands = [] if supernet_ready(supernet_dir) else [
        ("supernet", supernet_command(supernet_dir, data, epochs=args.supernet_epochs, batch_size=args.batch,
                                      lr=args.lr, threads=1))]
    runs = StandaloneRuns(args.out / "standalone.json", data, budget, jobs=args.jobs, threads=1)
    done = len(runs.done)

    def progress(name: str, result: dict[str, Any]) -> None:
        nonlocal done
        done += name != "supernet"
        what = f"top-1 {result['top1']:.4f}" if "top1" in result else "trained"
        print(f"  [{done}/{len(pairs)}] {name[:60]}: {what} in {result['seconds']:.0f} s "
              f"({(time.perf_counter() - started) / 60:.1f} min)", flush=True)

    train_started = time.perf_counter()
    results = runs.run(pairs, commands=commands, on_result=progress)
    train_seconds = time.perf_counter() - train_started
    torch.set_num_threads(args.score_threads)
    score_started = time.perf_counter()
    scores, seconds, extra = cheap_scores(specs, data, supernet_dir, args)
    score_seconds = time.perf_counter() - score_started

    truth = [statistics.mean(results[key(s, seed)]["top1"] for seed in seeds if key(s, seed) in results)
             for s in specs]
    rows = []
    for i, (spec, ms) in enumerate(chosen):
        second = results.get(key(spec, seeds[1]), {}).get("top1")
        rows.append((i, f"{ms:.2f}", f"{scores['params'][i] / 1e6:.2f}", f"{scores['MAdds'][i] / 1e6:.2f}",
                     f"{results[key(spec, seeds[0])]['top1']:.4f}", "" if second is None else f"{second:.4f}",
                     f"{scores['supernet'][i]:.4f}", f"{scores['predictor'][i]:.4f}",
                     f"{scores['proxy 100 steps'][i]:.4f}", f"{scores['naswot'][i]:.1f}",
                     f"{scores['synflow'][i]:.1f}"))
    print(f"\n{len(specs)} architectures (fastest first; latency: eager, 1 thread, batch 1, thread CPU time)")
    print(format_columns(("#", "ms", "params M", "MAdds M", f"seed {seeds[0]}", f"seed {seeds[1]}",
                          "supernet", "predictor", "proxy 100", "naswot", "synflow"), rows))
    correlations = {name: (float(spearmanr(values, truth)[0]), float(kendalltau(values, truth)[0]))
                    for name, values in scores.items()}
    spread = seed_spread(results, specs, seeds)
    print(f"\nagainst stand-alone top-1 (mean over seeds; {len(specs)} architectures):")
    print(format_columns(("score", "Spearman", "Kendall tau", "s per arch"),
                         [(name, f"{rho:+.3f}", f"{tau:+.3f}", f"{seconds.get(name, 0.0):.2f}")
                          for name, (rho, tau) in correlations.items()]))
    print(f"seed spread over {spread['networks']} networks trained twice: mean |gap| "
          f"{spread['mean_abs_gap']:.4f}, max {spread['max_abs_gap']:.4f}; Spearman seed {seeds[0]} vs seed "
          f"{seeds[1]} {spread['spearman_seed_vs_seed']:+.3f}")
    wall = time.perf_counter() - started
    print(f"stand-alone top-1 range {min(truth):.4f}-{max(truth):.4f}; wall time {wall / 60:.1f} min "
          f"(training {train_seconds / 60:.1f}, scoring {score_seconds / 60:.1f}) with --jobs {args.jobs}")
    serialize.atomic_write_text(args.out / "fidelity.json", json.dumps({
        "archs": [{"spec": str(s), "latency_ms": ms} for s, ms in chosen], "standalone": truth,
        "scores": scores, "correlations": correlations, "seed_spread": spread, "seconds_per_arch": seconds,
        **extra, "budget": vars(budget), "supernet_epochs": args.supernet_epochs, "wall_s": wall,
        "val_images": len(splits.val), "supernet_proxy": args.supernet_proxy,
    }, indent=1))


if __name__ == "__main__":
    main()
