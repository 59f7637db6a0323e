"""Export the V3 references (untrained, 224x224, 1000 classes) and print what each format costs.

    python benchmarks/export_roundtrip.py [--resolution 224] [--classes 1000] [--exporter auto]

Batch-norm statistics are first set from random inputs so that outputs have a realistic scale
(untrained networks in eval mode otherwise give logits near 1e-8, and any difference passes).
Prints, per network: export time (spec files, weights, TorchScript, ONNX + onnxruntime check,
model card), file sizes, and the largest output difference of TorchScript and ONNX vs PyTorch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from search.export import export_model, load_exported
from search_spaces.builder import build_model
from search_spaces.printout import format_columns
from search_spaces.reference import REFERENCES, reference_spec


def calibrated(spec, batches: int = 2) -> torch.nn.Module:
    """A network with BN running statistics averaged over random input batches."""
    torch.manual_seed(0)
    model = build_model(spec).train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(8, spec.in_channels, spec.resolution, spec.resolution))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--exporter", default="auto", choices=("auto", "legacy", "dynamo"))
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in REFERENCES:
            spec = reference_spec(name, num_classes=args.classes, resolution=args.resolution)
            model = calibrated(spec)
            with torch.no_grad():
                scale = model(torch.randn(2, 3, spec.resolution, spec.resolution)).abs().max().item()
            start = time.perf_counter()
            result = export_model(spec, model, Path(tmp) / name, onnx_exporter=args.exporter,
                                  opset=max(args.opset, 18) if args.exporter == "dynamo" else args.opset)
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            load_exported(result.out_dir)
            load_seconds = time.perf_counter() - start
            size = {f: result.path(f).stat().st_size / 2**20 for f in result.files}
            checks = result.checks.to_json()
            rows.append((name, f"{result.cost.params:,}", f"{scale:.2f}", f"{seconds:.1f}",
                         f"{load_seconds:.2f}", f"{size['weights.safetensors']:.1f}",
                         f"{size['model.torchscript.pt']:.1f}", f"{size['model.onnx']:.1f}",
                         f"{checks['torchscript_max_abs_diff']:.1e}",
                         f"{checks['onnx_exporter']} {checks['onnx_opset']}",
                         f"{checks['onnx_max_abs_diff']:.1e}"))
    print(f"export of the references (BN-calibrated random weights) at {args.resolution}x{args.resolution}, "
          f"{args.classes} classes, 1 thread, torch {torch.__version__}")
    print(format_columns(("network", "params", "max |logit|", "export s", "load s", "weights MiB", "TS MiB",
                        "ONNX MiB", "TS diff", "ONNX exporter/opset", "ONNX diff"), rows))


if __name__ == "__main__":
    main()
