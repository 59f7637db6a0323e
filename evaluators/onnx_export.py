"""The ONNX export of a built network or layer: ``torch.onnx`` with the project's conventions
(input ``input``, output ``logits``, batch axis dynamic), by the TorchScript-based (``legacy``)
or the torch.export-based (``dynamo``) exporter. :mod:`search.export_formats` writes deployment
files with it (and checks them against PyTorch); the onnxruntime latency backend
(:mod:`evaluators.latency.onnxruntime_backend`) times layers and networks exported with it.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from search_spaces.errors import ExportError

ONNX_EXPORTERS = ("auto", "legacy", "dynamo")
DYNAMO_MIN_OPSET = 18  # the torch.export-based exporter cannot emit older opsets
MIN_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_legacy(model: nn.Module, inputs: torch.Tensor, tmp: str, opset: int) -> None:
    """Write ``model`` (traced on ``inputs``) to the file ``tmp`` with the legacy exporter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (inputs,), tmp, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )


def export_dynamo(model: nn.Module, inputs: torch.Tensor, tmp: str, opset: int) -> None:
    """Write ``model`` to the file ``tmp`` with the dynamo exporter (``opset`` >= 18)."""
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(
            model, (inputs,), None, dynamo=True, opset_version=opset, verbose=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    finally:
        quiet.setLevel(level)
    if program is None:
        raise ExportError("the dynamo ONNX exporter returned no program")
    program.save(tmp)
