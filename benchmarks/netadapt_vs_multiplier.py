"""NetAdapt vs a uniform width multiplier, at the same latency target and training budget.

Starting from MobileNetV3-Small (width 1.0) on the embedded synthetic set at 32x32, reach a LUT
latency 20% below the seed's. (A x0.5 seed is faster to train, but at 32x32 its latency is mostly
per-layer overhead: NetAdapt runs out of proposals at ~0.86 x its latency and the multiplier must
drop to ~x0.1 to reach 0.8 x.)

(i)  NetAdapt (``search.netadapt.refine.refine``, as ``mobilenas refine`` runs it): the seed is
     trained ``netadapt.pretrain_steps`` steps, each iteration fine-tunes every proposal
     ``netadapt.short_steps`` steps and keeps the best, and the result is fine-tuned
     ``netadapt.final_steps`` steps;
(ii) a uniform width multiplier: the largest ``m`` (bisection, to 0.005) whose
     ``reference_spec(arch, width_mult=m)`` has a LUT latency at most NetAdapt's target, trained
     from scratch with the same recipe (``trainer``, one cosine schedule) for as many steps as
     NetAdapt's budget:

     * ``--budget lineage`` (default): pretrain + iterations x short_steps + final, the optimizer
       steps that the weights of the NetAdapt network went through;
     * ``--budget compute``: pretrain + every proposal's short_steps + final, every optimizer step
       NetAdapt spent (favours the multiplier: it gets many more steps).

Both budgets are printed; the table gives val and test top-1, LUT-predicted latency, end-to-end latency
(``evaluators.latency.measure_many`` of seed and both results in 3 interleaved rounds, same
protocol), MAdds and params. The config is ``conf/refine.yaml`` composed with Hydra (as
``mobilenas refine`` sees it) with the benchmark's budget (``DEFAULTS`` below), then the command
line's overrides; latency uses the thread-CPU timer (the machine is shared), LUT in ``tables/``.
The width multiplier leaves the head's hidden width alone below 1.0 and NetAdapt never shrinks
it, so neither touches the head.

    python benchmarks/netadapt_vs_multiplier.py                      # ~6 min on one CPU thread
    python benchmarks/netadapt_vs_multiplier.py --budget compute     # ~7 min
    python benchmarks/netadapt_vs_multiplier.py netadapt.pretrain_steps=3000 netadapt.short_steps=50 \\
        netadapt.final_steps=1000 netadapt.delta_ratio=0.01 data.train_size=20000   # hours
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable

import torch

from evaluators.cost import count_cost
from evaluators.data import load_dataset
from evaluators.latency import latency_evaluator, measure_many
from evaluators.training import fit
from search.netadapt.refine import refine, top1
from search.schema import compose_options
from search_spaces.builder import build_model
from search_spaces.printout import format_columns
from search_spaces.reference import REFERENCES, reference_spec
from search_spaces.spec import ArchSpec

# The benchmark's budget on top of conf/refine.yaml (command-line overrides come after these).
DEFAULTS = [
    "arch=mobilenet_v3_small", "width_mult=1.0", "progress=false",
    "data=synthetic", "data.train_size=3000", "data.test_size=500",
    "trainer=fast", "trainer.batch_size=64", "trainer.progress=false",
    "netadapt.target_ratio=0.8", "netadapt.delta_ratio=0.025", "netadapt.pretrain_steps=600",
    "netadapt.short_steps=20", "netadapt.final_steps=300",
    "latency=cpu", "latency.timer=thread_cpu",
]


def widest_multiplier(make: Callable[[float], ArchSpec], latency_ms: Callable[[ArchSpec], float],
                      target_ms: float, *, high: float, low: float = 0.05,
                      tol: float = 0.005) -> tuple[float, ArchSpec]:
    """The largest width multiplier ``m`` in [``low``, ``high``] (to ``tol``) with
    ``latency_ms(make(m)) <= target_ms``, by bisection. Latency grows with ``m`` in steps (widths
    are rounded to multiples of 8), so this is the right edge of the step bisection lands on."""
    if latency_ms(make(low)) > target_ms:
        raise ValueError(f"even width {low} is slower than the target {target_ms:.3f} ms")
    if latency_ms(make(high)) <= target_ms:
        return high, make(high)
    while high - low > tol:
        middle = (low + high) / 2
        low, high = (middle, high) if latency_ms(make(middle)) <= target_ms else (low, middle)
    return low, make(low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides of conf/refine.yaml, e.g. netadapt.short_steps=50")
    parser.add_argument("--budget", choices=("lineage", "compute"), default="lineage",
                        help="training steps of the multiplier network (see above)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    cfg = compose_options("refine", DEFAULTS + args.overrides)  # a RefineConfig, validated
    if cfg.arch not in REFERENCES:
        parser.error(f"arch must be a reference ({', '.join(REFERENCES)}), got {cfg.arch!r}")
    netadapt_cfg, trainer = cfg.netadapt, cfg.trainer
    data = load_dataset(cfg.data)
    latency = latency_evaluator(cfg.latency, data.resolution)

    def make(m: float) -> ArchSpec:
        return reference_spec(cfg.arch, width_mult=m, num_classes=data.num_classes,
                              resolution=data.resolution).replace(in_channels=data.in_channels)

    seed = make(cfg.width_mult)
    print(f"seed {cfg.arch} x{cfg.width_mult:g} on {data.name} ({len(data.train)} train / {len(data.val)} "
          f"val / {len(data.test)} test) at {data.resolution}x{data.resolution}\n"
          f"latency: {latency.describe()}\n"
          f"NetAdapt: target {netadapt_cfg.target_ratio} x seed, delta {netadapt_cfg.delta_ratio} x seed, "
          f"pretrain {netadapt_cfg.pretrain_steps}, {netadapt_cfg.short_steps} per proposal, final "
          f"{netadapt_cfg.final_steps} steps; trainer {trainer.optimizer} lr {trainer.lr}, batch "
          f"{trainer.batch_size}\n", flush=True)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        result = refine(seed, config=netadapt_cfg, latency_ms=latency, data=data, trainer=trainer,
                        run_dir=run_dir, progress=False)
    netadapt_s = time.perf_counter() - started
    proposals = sum(len(record.candidates) for record in result.history[1:])
    pretrain, short, final = netadapt_cfg.pretrain_steps, netadapt_cfg.short_steps, netadapt_cfg.final_steps
    steps = {"lineage": pretrain + result.iterations * short + final,
             "compute": pretrain + proposals * short + final}
    print(f"NetAdapt {result.status} after {result.iterations} iterations, {proposals} proposals fine-tuned, "
          f"{netadapt_s:.0f} s; budget: lineage {steps['lineage']} steps, compute {steps['compute']} steps",
          flush=True)

    started = time.perf_counter()
    m, uniform = widest_multiplier(make, latency, result.target_ms, high=cfg.width_mult)
    model = build_model(uniform)
    trained = fit(model, data, trainer.replace(steps=max(1, steps[args.budget])))
    uniform_s = time.perf_counter() - started
    print(f"multiplier x{m:.3f}: trained {trained.steps} steps from scratch ({args.budget} budget, "
          f"{trained.status}), {uniform_s:.0f} s\n", flush=True)

    # name -> (spec, trained network (None: the seed, whose weights refine does not keep), steps)
    networks = {"seed": (seed, None, pretrain), "NetAdapt": (result.spec, result.model, steps["lineage"]),
                f"multiplier x{m:.3f}": (uniform, model, trained.steps)}
    measured = measure_many([spec for spec, _, _ in networks.values()], latency.protocol, rounds=3)
    rows = []
    for (name, (spec, network, n_steps)), ms in zip(networks.items(), measured):
        cost = count_cost(spec)
        val, test = ((f"{result.seed_accuracy:.4f}", "-") if network is None else
                     (f"{top1(network, data):.4f}", f"{top1(network, data, 'test'):.4f}"))
        rows.append((name, f"{latency(spec):.3f}", f"{ms.ms:.3f}", f"{cost.madds_m:.2f}", f"{cost.params:,}",
                     str(n_steps), val, test))
    print(format_columns(("network", "LUT ms", "measured ms", "MAdds M", "params", "steps", "val top-1",
                        "test top-1"), rows))
    print(f"\ntarget {result.target_ms:.3f} ms (LUT); measured: {measured[0].protocol.describe()}, "
          f"3 interleaved rounds\nNetAdapt:   {result.spec}\nmultiplier: {uniform}")


if __name__ == "__main__":
    main()
