"""The plain timing loop a user would write, as the yardstick of the latency figures.

    python benchmarks/stopwatch.py specs.json out.json [--threads 1 --batch 1 --runtime torch]
    MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432 python benchmarks/stopwatch.py ...

For each network of ``specs.json`` (a JSON list of spec dicts): build it (torch eager in
``torch.inference_mode``, or exported with the project's exporter into an onnxruntime
``InferenceSession`` with the protocol's session settings), warm up, and time ``model(x)`` with
``time.perf_counter``: nothing else (no drift correction, no allocator or GC settings, its own
fresh process; the second line above keeps glibc's allocator from handing memory back to the
kernel, as the protocol does, through glibc's own environment variables). The networks take
turns in ``--rounds`` rounds so that a slow spell of the machine hits them alike.

The machine's speed is watched between (never during) the timed runs: a fixed matrix
workload times the machine before and after every group of runs. A group is *quiet* when both
watches are within 1.25x of the fastest watch of the whole run (on a 2-vCPU machine a busy
sibling hyperthread doubles them). ``out.json`` holds, per network, the median of all runs
("whatever the machine did") and the median of the runs of quiet groups ("the stopwatch on a
quiet machine"), and the share of quiet groups.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from search_spaces.errors import MobilenasError

QUIET_MARGIN = 1.25


def _watch() -> float:
    """Milliseconds of a fixed workload (three 160x160 matrix products, ~0.5 ms on one core)."""
    a = torch.ones(160, 160)
    start = time.perf_counter()
    for _ in range(3):
        a = torch.mm(a, a) * 1e-3
    return (time.perf_counter() - start) * 1e3


def _runner(spec_dict: dict[str, Any], runtime: str, batch: int, threads: int) -> Callable[[], Any]:
    from search_spaces.builder import build_model
    from search_spaces.serialize import from_dict

    spec = from_dict(spec_dict)
    model = build_model(spec).eval()
    x = torch.randn(batch, spec.in_channels, spec.resolution, spec.resolution)
    if runtime == "torch":
        return lambda: model(x)
    from evaluators.latency.kit_bench import make_session
    from evaluators.latency.onnxruntime_backend import export_onnx

    path = Path(tempfile.mkdtemp()) / "model.onnx"
    export_onnx(model, x, path)
    session = make_session(path, threads=threads)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def stopwatch(specs: list[dict[str, Any]], *, runtime: str = "torch", threads: int = 1, batch: int = 1,
              warmup: int = 10, runs: int = 30, rounds: int = 10) -> list[dict[str, float]]:
    """Per spec: ``all_ms`` (median of every run), ``quiet_ms`` (median of the quiet groups'
    runs; NaN when none was quiet) and ``quiet_share``."""
    torch.set_num_threads(threads)
    per_round = max(1, -(-runs // rounds))
    with torch.inference_mode():
        runners = [_runner(s, runtime, batch, threads) for s in specs]
        groups: list[list[tuple[float, float, list[float]]]] = [[] for _ in specs]
        for r in range(rounds):
            for i, run in enumerate(runners):
                for _ in range(warmup if r == 0 else 1):
                    run()
                before = min(_watch() for _ in range(2))
                times = []
                for _ in range(per_round):
                    start = time.perf_counter()
                    run()
                    times.append((time.perf_counter() - start) * 1e3)
                after = min(_watch() for _ in range(2))
                groups[i].append((before, after, times))
    fastest = min(min(b, a) for g in groups for b, a, _ in g)
    out = []
    for g in groups:
        quiet = [t for b, a, times in g for t in times if max(b, a) <= QUIET_MARGIN * fastest]
        out.append({
            "all_ms": statistics.median(t for _, _, times in g for t in times),
            "quiet_ms": statistics.median(quiet) if quiet else float("nan"),
            "quiet_share": sum(max(b, a) <= QUIET_MARGIN * fastest for b, a, _ in g) / len(g),
        })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("specs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--runtime", default="torch", choices=("torch", "onnxruntime"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    try:
        specs = json.loads(args.specs.read_text())
    except (OSError, ValueError) as err:
        parser.error(f"specs: cannot read {args.specs} as JSON ({err})")
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        parser.error(f"specs: {args.specs} must hold a JSON list of spec objects (as written by to_dict)")
    for name in ("threads", "batch", "runs", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: must be >= 1, got {getattr(args, name)}")
    try:
        results = stopwatch(specs, runtime=args.runtime, threads=args.threads,
                            batch=args.batch, warmup=args.warmup, runs=args.runs, rounds=args.rounds)
    except MobilenasError as err:
        parser.error(f"specs: {args.specs}: {err}")
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
