"""Weight-sharing supernet: training throughput, scoring time, and scores against stand-alone training.

1. Training images/s of the supernet (sandwich rule: largest, smallest and ``--num-random`` random
   sub-networks per step, in-place distillation) next to training the largest network alone, both
   through the trainer's own step, timed alternately in one run on the same batches.
2. Seconds to score one sub-network (batch-norm re-estimation on ``--calib-batches`` training
   batches, then top-1 on ``--val-images`` validation images), over distinct random sub-networks.
3. On Fashion-MNIST (V3-Small space, 32x32): the largest, the smallest and V3-Small's own
   sub-network scored from a supernet trained ``--steps`` steps, next to the same networks each
   trained alone for ``--steps`` steps (same batch size, recipe and seed).

    python benchmarks/supernet.py --steps 300
    python benchmarks/supernet.py --steps 3000 --threads 2 --data-root ../shared/data/fashion-mnist
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from standalone import FASHION

from evaluators.cost import count_cost
from evaluators.data import DataConfig, DatasetSplits, load_dataset
from evaluators.supernet import SuperNet, score_subnet
from evaluators.supernet.config import SupernetTrainConfig
from evaluators.supernet.train import SupernetRun, train_supernet
from evaluators.training import TrainConfig, fit
from evaluators.training.trainer import TrainingRun
from search_spaces.builder import build_model
from search_spaces.config import SpaceConfig, build_space
from search_spaces.printout import format_columns
from search_spaces.space import SearchSpace, sample_specs
from search_spaces.spec import ArchSpec


def timed_steps(run: TrainingRun, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Seconds of one training step on each of ``batches`` (the trainer's step: forward, backward,
    clipping, optimizer), summed."""
    started = time.perf_counter()
    for images, labels in batches:
        run.train_step(images, labels)
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def throughput(space: SearchSpace, data: DatasetSplits, cfg: TrainConfig, settings: SupernetTrainConfig, *,
               rounds: int, steps: int) -> tuple[float, float]:
    """(supernet images/s, largest-alone images/s): ``rounds`` alternating rounds of ``steps`` steps
    each on the same batches, medians; one warm-up round first."""
    torch.manual_seed(0)
    supernet = SupernetRun(SuperNet(space), data, cfg, "val", settings)
    alone = TrainingRun(build_model(supernet.largest), data, cfg, "val")
    batches = list(supernet.train_loader.batches(0))[:steps]
    images = sum(len(labels) for _, labels in batches)
    times: dict[str, list[float]] = {"supernet": [], "alone": []}
    for i in range(rounds + 1):
        for name, run in (("supernet", supernet), ("alone", alone)):
            seconds = timed_steps(run, batches)
            if i:
                times[name].append(seconds)
    return images / statistics.median(times["supernet"]), images / statistics.median(times["alone"])


def scoring_seconds(net: SuperNet, data: DatasetSplits, specs: list[ArchSpec], *, calib_batches: int,
                    batch_size: int) -> list[float]:
    """Wall seconds of :func:`score_subnet` for each of ``specs`` (distinct: no cache hit)."""
    seconds = []
    for spec in specs:
        started = time.perf_counter()
        score_subnet(net, spec, data, calib_batches=calib_batches, seed=0, batch_size=batch_size)
        seconds.append(time.perf_counter() - started)
    return seconds


def compare(space: SearchSpace, data: DatasetSplits, cfg: TrainConfig, settings: SupernetTrainConfig, *,
            calib_batches: int, batch_size: int) -> list[tuple[str, ...]]:
    """Rows (name, params M, MAdds M, supernet top-1, alone top-1) for the largest, the smallest and
    the seed, after the same training budget; timings are printed as they come."""
    torch.manual_seed(cfg.seed)
    net = SuperNet(space)
    started = time.perf_counter()
    result = train_supernet(net, data, cfg, settings)
    print(f"  supernet: {result.status}, {result.steps} steps in {time.perf_counter() - started:.0f}s")
    named = {"largest": net.largest(), "smallest": net.smallest(), "seed (V3-Small)": space.seed}
    rows = []
    for name, spec in named.items():
        shared = score_subnet(net, spec, data, calib_batches=calib_batches, seed=0, batch_size=batch_size)
        torch.manual_seed(cfg.seed)
        started = time.perf_counter()
        alone = fit(build_model(spec), data, cfg)
        print(f"  {name} alone: {alone.status}, {alone.steps} steps in {time.perf_counter() - started:.0f}s")
        cost = count_cost(spec)
        rows.append((name, f"{cost.params_m:.3f}", f"{cost.madds_m:.2f}", f"{100 * shared.top1:.2f}",
                     f"{100 * alone.top1:.2f}"))
    return rows


def fashion_mnist(root: Path, val_images: int, train_images: int | None) -> DatasetSplits:
    return load_dataset(DataConfig(name="fashion_mnist", root=str(root), resolution=32, val_size=0.1,
                                   val_subset=val_images, train_subset=train_images))


def report_speed(space: SearchSpace, data: DatasetSplits, cfg: TrainConfig, settings: SupernetTrainConfig,
                 args: argparse.Namespace) -> None:
    """Print the training throughput ratio and the scoring time per sub-network."""
    supernet_ips, alone_ips = throughput(space, data, cfg, settings, rounds=args.rounds,
                                         steps=args.throughput_steps)
    print(f"training: supernet {supernet_ips:.0f} img/s ({2 + args.num_random} sub-networks per step), "
          f"largest alone {alone_ips:.0f} img/s; ratio {supernet_ips / alone_ips:.2f}")
    torch.manual_seed(0)
    specs = sample_specs(space, args.subnets, seed=1)
    seconds = scoring_seconds(SuperNet(space), data, specs, calib_batches=args.calib_batches,
                              batch_size=args.score_batch)
    print(f"scoring: {statistics.median(seconds):.2f}s per sub-network (median of {len(seconds)}; min "
          f"{min(seconds):.2f}s, max {max(seconds):.2f}s; {args.calib_batches} re-estimation batches of "
          f"{args.score_batch}, {len(data.val)} validation images)\n")


def report_comparison(space: SearchSpace, data: DatasetSplits, cfg: TrainConfig,
                      settings: SupernetTrainConfig, args: argparse.Namespace) -> None:
    """Print the budget, then the supernet's and the stand-alone scores of the three sub-networks."""
    epochs = args.steps * args.batch / len(data.train)
    print(f"budget: {args.steps} steps of batch {args.batch} ({epochs:.2f} epochs of {len(data.train)} "
          f"images), fast recipe (RMSProp, lr {args.lr:g}, cosine), same for every run; validation top-1 "
          f"on {len(data.val)} images")
    rows = compare(space, data, cfg, settings, calib_batches=args.calib_batches, batch_size=args.score_batch)
    header = ("sub-network", "params M", "MAdds M", "supernet top-1 %", "alone top-1 %")
    print()
    print(format_columns(header, rows))


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training budget (optimizer steps) of the "
                        "supernet and of each network trained alone")
    parser.add_argument("--batch", type=int, default=64, help="training batch size")
    parser.add_argument("--lr", type=float, default=0.001, help="learning rate (fast recipe: RMSProp)")
    parser.add_argument("--num-random", type=int, default=2, help="random sub-networks per supernet step")
    parser.add_argument("--throughput-steps", type=int, default=3, help="timed steps per throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds (median)")
    parser.add_argument("--subnets", type=int, default=5, help="random sub-networks timed for scoring")
    parser.add_argument("--calib-batches", type=int, default=20, help="batch-norm re-estimation batches")
    parser.add_argument("--score-batch", type=int, default=100, help="batch size when scoring")
    parser.add_argument("--val-images", type=int, default=1000, help="validation images scored")
    parser.add_argument("--train-images", type=int, default=None, help="use only this many training images")
    parser.add_argument("--data-root", type=Path, default=FASHION)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-comparison", action="store_true", help="throughput and scoring time only")
    parser.add_argument("--skip-speed", action="store_true", help="the Fashion-MNIST comparison only")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    data = fashion_mnist(args.data_root, args.val_images, args.train_images)
    space = build_space(SpaceConfig(seed="mobilenet_v3_small"), num_classes=data.num_classes,
                        resolution=32, in_channels=data.in_channels)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, progress=False,
                      eval_every=args.steps, device=args.device)
    settings = SupernetTrainConfig(num_random=args.num_random)
    print(f"device {args.device}, {args.threads} thread(s), torch {torch.__version__}; V3-Small space "
          f"({space.size():.3g} architectures), Fashion-MNIST 32x32, batch {args.batch}\n")
    if not args.skip_speed:
        report_speed(space, data, cfg, settings, args)
    if not args.skip_comparison:
        report_comparison(space, data, cfg, settings, args)


if __name__ == "__main__":
    main()
