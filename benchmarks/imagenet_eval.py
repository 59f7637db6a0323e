"""Images/s of the ImageNet eval pipeline (decode, resize 256, crop 224, normalize) by DataLoader workers,
and of V3-Large/-Small forward passes on the same batches, side by side.

    python benchmarks/imagenet_eval.py [--images 96] [--workers 0 1 2] [--batch 32] [--threads 1]

Generates ``--images`` JPEGs of 500x375 (the ImageNet validation set's most frequent size) in a
temporary class-per-folder directory. The decode rate with N workers against the model's rate says
how many workers keep the model busy on this machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evaluators.data.imagenet_eval import EvalTransform, eval_batches, list_images
from search_spaces.builder import build_model
from search_spaces.printout import format_columns
from search_spaces.reference import REFERENCES, reference_spec


def make_folder(root: Path, images: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"n{i % 4:08d}"
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


def pipeline_rate(root: Path, workers: int, batch: int, interpolation: str) -> float:
    items, _ = list_images(root)
    start = time.perf_counter()
    count = sum(len(labels) for _, labels in eval_batches(items, EvalTransform(interpolation=interpolation),
                                                          batch_size=batch, num_workers=workers,
                                                          device=torch.device("cpu")))
    return count / (time.perf_counter() - start)


def model_rate(name: str, batch: int) -> float:
    model = build_model(reference_spec(name)).eval()
    x = torch.randn(batch, 3, 224, 224)
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        model(x)
    return batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_folder(root, args.images)
        rows, base = [], None
        for interpolation in ("bilinear", "bicubic"):
            for workers in args.workers:
                rate = pipeline_rate(root, workers, args.batch, interpolation)
                base = base or rate
                label = f"pipeline {interpolation}, {workers} workers"
                rows.append((label, f"{rate:.1f}", f"{rate / base:.2f}x"))
    for name in REFERENCES:
        rate = model_rate(name, args.batch)
        rows.append((f"{name} forward, {args.threads} thread(s)", f"{rate:.1f}", f"{rate / base:.2f}x"))
    print(format_columns(("stage", "images/s", "vs pipeline 0 workers bilinear"), rows))


if __name__ == "__main__":
    main()
