"""Training images/s delivered by the streaming folder pipeline (0, 1, 2, ... DataLoader workers) next to
the images/s of a MobileNetV3-Small training step at the same resolution: which one is the bottleneck.

    python benchmarks/data_pipeline.py [--root /tmp/mobilenas_pipeline] [--images 2000] [--classes 10]
        [--workers 0 1 2] [--batch 64] [--resolution 224] [--model-batch 32] [--threads 1] [--device cpu]

Generates (once; reused when ``--root`` already holds it) an ImageNet-style class-per-folder tree of
``--images`` JPEGs of 400 x 300 (quality 90, smooth photo-like content: ~35 KB each, ImageNet's are
~110 KB at ~400 x 350) and streams one epoch of training batches (decode, random-resized crop to
``--resolution``, flip; what ``mobilenas train data=folder data.stream=true`` runs) per worker count,
timed after the first batch (worker start-up excluded). The model row times full training steps
(forward, cross-entropy, backward, SGD step) of V3-Small on random batches after a warm-up, with
``--threads`` intra-op threads (1: on a busy 2-core machine, 2 threads run several times slower).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from evaluators.data import DataConfig, load_training_data
from search_spaces.builder import build_model
from search_spaces.printout import format_columns
from search_spaces.reference import reference_spec


def make_folder(root: Path, images: int, classes: int) -> None:
    """``images`` JPEGs of 400 x 300 in ``classes`` sub-folders (kept when already there)."""
    if len(list(root.glob("*/*.jpg"))) == images:
        return
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:300, 0:400].astype(np.float32)
    for i in range(images):
        folder = root / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0.005, 0.05, 3)
        base = np.stack([np.sin(a * xs + b * ys + k) for k in rng.uniform(0, 6, 3)], axis=-1)
        pixels = 127 + 100 * base * np.cos(c * ys)[..., None] + rng.normal(0, 6, (300, 400, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)


def loader_rate(root: Path, workers: int, batch: int, resolution: int, device: str) -> float:
    """Training images/s over one epoch, after the first batch."""
    splits = load_training_data(DataConfig(name="folder", root=str(root), resolution=resolution, val_size=0,
                                           test_size=0, stream=True, workers=workers))
    batches = splits.loader("train", batch, train=True, device=device).batches(0)
    next(batches)
    start, count = time.perf_counter(), 0
    for _, labels in batches:
        count += len(labels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def model_rate(resolution: int, batch: int, steps: int, device: str) -> float:
    """Images/s of V3-Small training steps (forward, loss, backward, SGD step) after one warm-up step."""
    torch.manual_seed(0)
    model = build_model(reference_spec("mobilenet_v3_small", num_classes=1000, resolution=resolution))
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, resolution, resolution, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    for step in range(steps + 1):
        if step == 1:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/mobilenas_pipeline"))
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--model-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    make_folder(args.root, args.images, args.classes)
    files = list(args.root.glob("*/*.jpg"))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    size = np.mean([f.stat().st_size for f in files]) / 1e3
    print(f"{len(files)} JPEGs of 400x300 in {args.root} (mean {size:.0f}"
          f" KB), {cpus} CPU cores, torch {torch.get_num_threads()} threads, device {args.device}")
    rows, rates = [], {}
    for workers in args.workers:
        rates[workers] = loader_rate(args.root, workers, args.batch, args.resolution, args.device)
        rows.append((f"loader, {workers} workers (batch {args.batch})", f"{rates[workers]:.0f}"))
    model = model_rate(args.resolution, args.model_batch, args.steps, args.device)
    rows.append((f"V3-Small training step (batch {args.model_batch})", f"{model:.0f}"))
    print(format_columns((f"at {args.resolution}x{args.resolution}", "images/s"), rows))
    best = max(rates, key=lambda w: rates[w])
    per_process = rates.get(1, rates.get(0, rates[best] / max(1, best)))  # 1 worker: decoding alone
    verdict = "the model" if rates[best] > model else "the loader"
    print(f"bottleneck here: {verdict} (best loader {rates[best]:.0f} vs model {model:.0f} images/s); "
          f"one decode process delivers ~{per_process:.0f} images/s, so a device training at R images/s "
          f"needs about R / {per_process:.0f} workers (data.workers) and as many free CPU cores")


if __name__ == "__main__":
    main()
