"""Torch eager against ONNX Runtime on this CPU, and how well an onnxruntime lookup table predicts
whole networks timed in onnxruntime.

    python benchmarks/latency_runtimes.py                       # V3-Small space, 8 held-out specs
    python benchmarks/latency_runtimes.py --space mobilenet_v3_large --specs 16

Part 1 times MobileNetV3-Large and -Small (the references, at --resolution) in the same run, in
interleaved rounds, under both runtimes, both drift-corrected in the machine's unit (stopwatch
milliseconds of the quiet machine): torch eager (``runtime=torch``) and ONNX Runtime
(``runtime=onnxruntime``: the network exported with the project's exporter, ``session.run`` of an
InferenceSession, --threads intra-op threads, graph optimization all). ``latency_lut.py
--runtime onnxruntime`` checks an onnxruntime table against the plain loop.

Part 2 builds an onnxruntime table with the layers the specs need (a fresh one
in a temp dir), fits scale and overhead on the fit networks timed alongside, and compares its
predictions with the held-out specs (none used for the fit) timed end to end in onnxruntime:
MAPE, share within +-10%, Spearman. The figures are as noisy as the machine: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from evaluators.latency import (
    LatencyProtocol,
    LatencyTable,
    measure_many,
    space_fit_specs,
    validate_table,
)
from search_spaces.config import SpaceConfig, build_space
from search_spaces.reference import reference_spec
from search_spaces.space import sample_specs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--space", default="mobilenet_v3_small", help="seed of the space of part 2")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--specs", type=int, default=8, help="held-out specs of part 2")
    parser.add_argument("--fit-specs", type=int, default=4, help="fit networks (plus the V3 references)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds when timing networks")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger("evaluators.latency.table").setLevel(logging.ERROR)  # "no fitted overhead": fit below
    common = {
        "threads": args.threads, "resolution": args.resolution, "warmup": args.warmup, "runs": args.runs
    }
    runtimes = {
        "torch eager": LatencyProtocol(**common),
        "onnxruntime": LatencyProtocol(runtime="onnxruntime", **common),
    }
    print("protocols:\n" + "\n".join(f"  {name}: {p.describe()}" for name, p in runtimes.items()))
    compare_runtimes(runtimes, args.rounds)
    validate_onnxruntime(runtimes["onnxruntime"], args)


def compare_runtimes(runtimes: dict[str, LatencyProtocol], rounds: int) -> None:
    """Part 1: the V3 references in both runtimes; each runtime's rounds alternate with the other's."""
    resolution = next(iter(runtimes.values())).resolution
    specs = {name: reference_spec(name, resolution=resolution) for name in
             ("mobilenet_v3_large", "mobilenet_v3_small")}
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for runtime, protocol in runtimes.items():
            one_round = protocol.replace(runs=max(1, protocol.runs // rounds))
            for name, result in zip(specs, measure_many(list(specs.values()), one_round), strict=True):
                samples.setdefault((runtime, name), []).append(result.ms)
    print(f"\npart 1: V3 references at {resolution}x{resolution}, median of {rounds} rounds (ms)")
    print(f"{'network':<22}" + "".join(f"{r:>14}" for r in runtimes) + f"{'ort / eager':>14}")
    for name in specs:
        ms = [float(np.median(samples[(runtime, name)])) for runtime in runtimes]
        print(f"{name:<22}" + "".join(f"{m:>14.2f}" for m in ms) + f"{ms[1] / ms[0]:>14.2f}")


def validate_onnxruntime(protocol: LatencyProtocol, args: argparse.Namespace) -> None:
    """Part 2: an onnxruntime table's predictions against networks timed in onnxruntime."""
    space = build_space(SpaceConfig(seed=args.space), num_classes=1000, resolution=args.resolution)
    fitting = space_fit_specs(space, args.fit_specs, seed=args.seed)
    specs = sample_specs(space, args.specs, seed=args.seed, exclude=fitting)
    with tempfile.TemporaryDirectory() as tmp:
        table = LatencyTable.open(Path(tmp) / "table.json", protocol)
        start = time.perf_counter()
        rows = table.build([layer for spec in [*fitting, *specs] for layer in spec.layers()], progress=False)
        print(f"\npart 2: {args.space} space at {args.resolution}: {rows} layers exported and timed in "
              f"onnxruntime in {time.perf_counter() - start:.0f} s")
        report = validate_table(table, specs, fit_specs=fitting, rounds=args.rounds, progress=False)
    print(f"held-out specs: {report.summary()}")
    print(f"fit on {len(fitting)} networks timed alongside: scale {report.fit.scale:.3f}, "
          f"overhead {report.fit.overhead_ms:.3f} ms")
    print(f"{'predicted ms':>14}{'measured ms':>14}{'error':>9}")
    for predicted, measured in zip(report.predicted_ms, report.measured_ms, strict=True):
        print(f"{predicted:>14.3f}{measured:>14.3f}{100 * (predicted - measured) / measured:>8.1f}%")


if __name__ == "__main__":
    main()
