"""Training throughput (images/s) of MobileNetV3-Small and -Large on this machine.

Times full training steps of the project's trainer path (augmented batch from the in-memory
loader, forward, cross-entropy, backward, the fast recipe's RMSProp step) after a warm-up, and
the batch pipeline alone, with channels-last weights (what the trainer uses on every device) next to
contiguous ones. Defaults: CPU, 1 thread, batch 64 at 32x32 and 16 at 224x224, 10 classes.

    python benchmarks/training_throughput.py
    python benchmarks/training_throughput.py --threads 2 --steps 20 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from evaluators.data.arrays import ImageArrays
from evaluators.data.loader import Augment, BatchLoader
from evaluators.training import TrainConfig
from evaluators.training.optim import make_optimizer
from search_spaces.builder import build_model
from search_spaces.printout import format_columns
from search_spaces.reference import reference_spec


def time_steps(arch: str, resolution: int, batch: int, steps: int, warmup: int,
               device: str, memory_format: torch.memory_format) -> tuple[float, float]:
    """(median seconds per training step, median seconds per loader batch)."""
    torch.manual_seed(0)
    model = build_model(reference_spec(arch, num_classes=10, resolution=resolution)).to(device).train()
    model.to(memory_format=memory_format)  # type: ignore[call-overload]
    optimizer = make_optimizer(model, TrainConfig())
    criterion = nn.CrossEntropyLoss()
    count = batch * 4
    images = torch.randint(0, 256, (count, 3, resolution, resolution), dtype=torch.uint8)
    loader = BatchLoader(ImageArrays(images, torch.arange(count) % 10), batch_size=batch,
                         resolution=resolution, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True,
                         augment=Augment(4, True), drop_last=True, device=device)
    step_times, load_times = [], []
    for i in range(warmup + steps):
        started = time.perf_counter()
        x, y = next(iter(loader.batches(epoch=i)))
        loaded = time.perf_counter()
        loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= warmup:
            step_times.append(time.perf_counter() - started)
            load_times.append(loaded - started)
    return statistics.median(step_times), statistics.median(load_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-32", type=int, default=64, help="batch size at 32x32")
    parser.add_argument("--batch-224", type=int, default=16, help="batch size at 224x224")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for arch in ("mobilenet_v3_small", "mobilenet_v3_large"):
        for resolution, batch in ((32, args.batch_32), (224, args.batch_224)):
            step_cl, load = time_steps(arch, resolution, batch, args.steps, args.warmup, args.device,
                                       torch.channels_last)
            step, _ = time_steps(arch, resolution, batch, args.steps, args.warmup, args.device,
                                 torch.contiguous_format)
            rows.append((arch, f"{resolution}x{resolution}", str(batch), f"{1000 * step_cl:.1f}",
                         f"{batch / step_cl:.0f}", f"{batch / step:.0f}", f"{step / step_cl:.2f}",
                         f"{1000 * load:.1f}", f"{batch / load:.0f}"))
    print(f"device {args.device}, {args.threads} thread(s), torch {torch.__version__}, "
          f"median of {args.steps} steps after {args.warmup} warm-up\n")
    header = ("arch", "input", "batch", "ms/step", "train img/s", "contiguous img/s", "speed-up", "loader ms",
              "loader img/s")
    print(format_columns(header, rows))


if __name__ == "__main__":
    main()
