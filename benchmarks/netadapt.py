"""NetAdapt figures: proposals per iteration and their cost, weight inheritance time, and a short
refinement on the synthetic set.

    python benchmarks/netadapt.py                      # LUT latency (cpu, 1 thread), ~ a few minutes
    python benchmarks/netadapt.py --refine-steps 0     # proposals and inheritance only
    python benchmarks/netadapt.py --latency madds      # fvcore MAdds instead of latency (no timing)

Part 1, at 224x224, 1000 classes: for V3-Large and V3-Small, the number of proposals of one
iteration (delta = 1% of the seed's latency), the latency evaluations they take, the time to
propose (warm latency cache excluded: cold, as in the first iteration) and the mean time to
inherit weights into one proposal.
Part 2, at 32x32 on the synthetic set: V3-Small x0.5 trained briefly (SGD, lr 0.05, batch 64),
then refined to 80% of its latency; seed and refined latency, accuracy, iterations, wall time.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import torch

from evaluators.cost import count_cost
from search.netadapt import NetAdaptConfig, inherit_weights, propose
from search_spaces.builder import build_model
from search_spaces.reference import REFERENCES, reference_spec


def latency_function(kind: str, resolution: int, tables_dir: str):
    if kind == "madds":
        return lambda spec: count_cost(spec).madds / 1e6, "fvcore MAdds (M), not ms"
    from evaluators.latency import LatencyConfig, latency_evaluator

    evaluator = latency_evaluator(LatencyConfig(tables_dir=tables_dir), resolution)
    return evaluator, evaluator.describe()


def part_proposals(kind: str, tables_dir: str) -> None:
    latency, description = latency_function(kind, 224, tables_dir)
    print(f"\n== one NetAdapt iteration at 224x224 ({description})")
    print(f"{'seed':<20} {'latency':>9} {'proposals':>9} {'exp':>4} {'bneck':>5} {'evals':>6} "
          f"{'propose s':>9} {'inherit ms':>10}")
    for name in REFERENCES:
        spec = reference_spec(name)
        latency(spec)  # table rows / overhead fit of the seed outside the timing
        calls = {"n": 0}

        def counted(s, _latency=latency):
            calls["n"] += 1
            return _latency(s)

        seed_ms = latency(spec)
        started = time.perf_counter()
        proposals = propose(spec, counted, 0.01 * seed_ms)
        propose_s = time.perf_counter() - started
        model = build_model(spec).eval()
        started = time.perf_counter()
        for p in proposals:
            inherit_weights(model, p.spec)
        inherit_ms = 1000 * (time.perf_counter() - started) / max(1, len(proposals))
        kinds = [p.kind for p in proposals]
        print(f"{name:<20} {seed_ms:>9.3f} {len(proposals):>9} {kinds.count('exp'):>4} "
              f"{kinds.count('bottleneck'):>5} {calls['n']:>6} {propose_s:>9.2f} {inherit_ms:>10.1f}")


def part_refine(kind: str, tables_dir: str, steps: int, train_size: int) -> None:
    from evaluators.data import DataConfig, load_dataset
    from evaluators.training import TrainConfig
    from search.netadapt.refine import refine

    data = load_dataset(DataConfig(train_size=train_size, test_size=500))
    latency, description = latency_function(kind, data.resolution, tables_dir)
    spec = reference_spec("mobilenet_v3_small", width_mult=0.5, num_classes=data.num_classes,
                          resolution=data.resolution)
    trainer = TrainConfig(batch_size=64, lr=0.05, progress=False)
    config = NetAdaptConfig(target_ratio=0.8, delta_ratio=0.02, short_steps=max(1, steps // 30),
                            final_steps=steps // 3, pretrain_steps=steps)
    print(f"\n== refinement of V3-Small x0.5 at 32x32, synthetic ({len(data.train)} train images); "
          f"{description}")
    print(f"   pretrain {config.pretrain_steps} steps, {config.short_steps} steps per proposal, "
          f"final {config.final_steps} steps, target 0.8 x seed, delta 0.02 x seed")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        result = refine(spec, config=config, latency_ms=latency, data=data, trainer=trainer, run_dir=run_dir,
                        progress=False)
    seconds = time.perf_counter() - started
    seed_cost, cost = count_cost(spec), count_cost(result.spec)
    print(f"{'':<8} {'latency':>9} {'val top-1':>9} {'MAdds M':>8} {'params':>9}")
    for name, ms, acc, c in (("seed", result.seed_latency_ms, result.seed_accuracy, seed_cost),
                             ("refined", result.latency_ms, result.accuracy, cost)):
        print(f"{name:<8} {ms:>9.3f} {acc:>9.4f} {c.madds_m:>8.2f} {c.params:>9,}")
    print(f"status {result.status} after {result.iterations} iterations, "
          f"{sum(len(r.candidates) for r in result.history)} candidates fine-tuned, {seconds:.0f} s")
    for record in result.history[1:]:
        print(f"  {record.iteration:>2} {record.chosen:<32} {record.latency_ms:>8.3f} ms "
              f"acc {record.accuracy:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", choices=("lut", "madds"), default="lut")
    parser.add_argument("--tables-dir", default="tables", help="where LUT files are kept (cpu, 1 thread)")
    parser.add_argument("--refine-steps", type=int, default=600,
                        help="seed training steps; proposals get 1/30, the final network 1/3 "
                             "(0: skip part 2)")
    parser.add_argument("--train-size", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    part_proposals(args.latency, args.tables_dir)
    if args.refine_steps:
        part_refine(args.latency, args.tables_dir, args.refine_steps, args.train_size)


if __name__ == "__main__":
    main()
