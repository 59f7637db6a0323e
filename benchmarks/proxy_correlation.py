"""How well cheap accuracy proxies rank architectures: Spearman correlations on sampled specs.

Samples specs from the MobileNetV3-Small search space at 32x32 (Optuna RandomSampler, seeded),
then scores each with NASWOT and SynFlow (training-free), a short proxy training and a longer
training (both from the same seed, trainer=fast, validation top-1 on a fixed subset), and
prints Spearman's rho between the rankings, for the synthetic set and for Fashion-MNIST (skipped
with a message when its files are absent).

    python benchmarks/proxy_correlation.py                      # ~5 min per data set on one thread
    python benchmarks/proxy_correlation.py --specs 40 --short-steps 100 --long-steps 600 --threads 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import optuna
import torch
from scipy.stats import spearmanr
from standalone import FASHION

from evaluators.accuracy import NaswotEvaluator, ProxyTrainEvaluator, SynflowEvaluator
from evaluators.data import DataConfig, load_dataset
from evaluators.training import TrainConfig
from search_spaces.printout import format_columns
from search_spaces.reference import reference_spec
from search_spaces.space import SearchSpace
from search_spaces.space import sample_specs as space_sample_specs
from search_spaces.spec import ArchSpec


def sample_specs(n: int, seed: int, resolution: int) -> list[ArchSpec]:
    space = SearchSpace(reference_spec("mobilenet_v3_small", num_classes=10, resolution=resolution))
    return space_sample_specs(space, n, seed=seed)


def correlate(name: str, data_cfg: DataConfig, specs: list[ArchSpec], args: argparse.Namespace) -> None:
    splits = load_dataset(data_cfg)
    trainer = TrainConfig(batch_size=args.batch, lr=args.lr, progress=False)  # the fast recipe
    evaluators = {
        "naswot": NaswotEvaluator(splits, batch_size=64, seed=args.seed),
        "synflow": SynflowEvaluator(splits, batch_size=64, seed=args.seed),
        **{f"train {steps} steps": ProxyTrainEvaluator(splits, trainer.replace(steps=steps), reports=1,
                                                       seed=args.seed)
           for steps in (args.short_steps, args.long_steps)},
    }
    scores: dict[str, list[float]] = {k: [] for k in evaluators}
    seconds: dict[str, float] = {k: 0.0 for k in evaluators}
    started = time.perf_counter()
    for i, spec in enumerate(specs):
        for key, evaluator in evaluators.items():
            result = evaluator.evaluate(spec)
            scores[key].append(result.accuracy)
            seconds[key] += result.seconds
        shown = "  ".join(f"{k} {v[-1]:.3f}" for k, v in scores.items())
        print(f"  [{name}] spec {i + 1}/{len(specs)}: {shown}", flush=True)
    short, long = list(evaluators)[2:]
    rows = []
    for a, b in (("naswot", short), ("synflow", short), ("naswot", long), ("synflow", long), (short, long)):
        rho, p = spearmanr(scores[a], scores[b])
        rows.append((f"{a} vs {b}", f"{rho:+.3f}", f"{p:.3g}"))
    size = f"{data_cfg.resolution}x{data_cfg.resolution}"
    print(f"\n{name}: {len(specs)} specs of the V3-Small space at {size}, "
          f"{len(splits.train)} train / {len(splits.val)} val images, {time.perf_counter() - started:.0f}s")
    print(format_columns(("pair", "Spearman rho", "p-value"), rows))
    print(format_columns(("evaluator", "s/spec", "min", "max"),
                       [(k, f"{seconds[k] / len(specs):.2f}", f"{min(v):.3f}", f"{max(v):.3f}")
                        for k, v in scores.items()]))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=20)
    parser.add_argument("--short-steps", type=int, default=30)
    parser.add_argument("--long-steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="RMSProp rate (trainer=fast)")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--train-subset", type=int, default=2000)
    parser.add_argument("--val-subset", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", nargs="+", default=["synthetic", "fashion_mnist"],
                        choices=["synthetic", "fashion_mnist"])
    parser.add_argument("--fashion-root", default=str(FASHION))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    specs = sample_specs(args.specs, args.seed, args.resolution)
    common = {"resolution": args.resolution, "train_subset": args.train_subset, "val_subset": args.val_subset}
    print(f"{args.specs} specs, proxy {args.short_steps} steps vs {args.long_steps} steps, "
          f"batch {args.batch}, lr {args.lr}, {args.threads} thread(s)\n")
    for name in args.data:
        if name == "synthetic":
            correlate(name, DataConfig(**common), specs, args)
        elif not Path(args.fashion_root).is_dir():
            print(f"fashion_mnist: skipped, {args.fashion_root} is absent\n")
        else:
            correlate(name, DataConfig(name="fashion_mnist", root=args.fashion_root, **common), specs, args)


if __name__ == "__main__":
    main()
