"""Data-parallel training throughput (images/s): 1 process against N processes, side by side.

Each configuration spawns its processes (gloo on the CPU, NCCL on CUDA, one GPU per process) and
times full training steps of the project's trainer (:class:`TrainingRun`: sharded loader batch,
forward, loss, backward, gradient all-reduce, optimizer step, batch-norm buffer averaging) on
MobileNetV3 with the same GLOBAL batch, after a warm-up. On the CPU, 1 process with as many threads
as the N processes together is shown as well: the fair baseline on the same cores.

    python benchmarks/distributed.py                                  # CPU: 1 vs 2 processes
    python benchmarks/distributed.py --device cuda --procs 1 8 --resolution 224 --batch 1024
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from evaluators.data import DataConfig, load_dataset
from evaluators.training import TrainConfig
from evaluators.training.trainer import TrainingRun
from search_spaces.builder import build_model
from search_spaces.printout import format_columns
from search_spaces.reference import reference_spec


def timed_steps(args: argparse.Namespace) -> float:
    """Seconds for ``args.steps`` training steps after ``args.warmup`` (every rank in step)."""
    data = load_dataset(DataConfig(num_classes=10, resolution=args.resolution, val_size=0.0,
                                   train_size=args.batch * (args.warmup + args.steps) + args.batch,
                                   test_size=0.01))
    torch.manual_seed(0)
    model = build_model(reference_spec(args.arch, num_classes=10, resolution=args.resolution))
    cfg = TrainConfig(steps=args.warmup + args.steps, batch_size=args.batch, progress=False,
                      device=args.device, ema_decay=0.0)
    run = TrainingRun(model, data, cfg, "test")
    model.train()
    started = 0.0
    for batch, (images, labels) in enumerate(run.train_loader.batches(0)):
        if batch == args.warmup:
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)
            run.dist.barrier()
            started = time.perf_counter()
        run.loss_weight = run.dist.world_size * run.train_loader.shard_fraction(batch)
        run.train_step(images, labels)
        if batch + 1 == args.warmup + args.steps:
            break
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    run.dist.barrier()
    return time.perf_counter() - started


def worker(rank: int, world: int, port: int, threads: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    try:
        seconds = timed_steps(args)
        if rank == 0:
            Path(out).write_text(json.dumps({"seconds": seconds}))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def measure(world: int, threads: int, args: argparse.Namespace) -> float:
    """Training images/s of ``world`` processes with ``threads`` threads each."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.json")
        mp.spawn(worker, args=(world, port, threads, args, out), nprocs=world, join=True)
        seconds = json.loads(Path(out).read_text())["seconds"]
    return args.batch * args.steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenet_v3_small")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64, help="global batch")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (one GPU per process)")
    args = parser.parse_args()
    cpu = args.device == "cpu"
    configs = [(n, 1) for n in args.procs]
    if cpu and max(args.procs) > 1:  # the same cores in one process
        configs.insert(1, (1, max(args.procs)))
    rows, baseline = [], None
    for world, threads in configs:
        rate = measure(world, threads if cpu else torch.get_num_threads(), args)
        baseline = baseline or rate
        rows.append((str(world), str(threads) if cpu else "-", f"{rate:.0f}", f"{rate / baseline:.2f}x"))
    print(f"{args.arch} {args.resolution}x{args.resolution}, global batch {args.batch}, "
          f"device {args.device}, torch {torch.__version__}, {args.steps} steps after {args.warmup} "
          "warm-up\n")
    print(format_columns(("processes", "threads each", "train img/s", "vs first row"), rows))


if __name__ == "__main__":
    main()
