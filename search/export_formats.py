"""Deployment formats of a built network: TorchScript and ONNX, each checked against PyTorch.

Every writer takes an eval-mode CPU network, writes one file and returns the largest absolute
difference between the saved artifact's outputs and the network's on a fixed random input;
:func:`check_outputs` judges that difference relative to the size of the logits.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evaluators.onnx_export import (
    DYNAMO_MIN_OPSET,
    INPUT_NAME,
    MIN_OPSET,
    ONNX_EXPORTERS,
    OUTPUT_NAME,
)
from evaluators.onnx_export import export_dynamo as _export_dynamo
from evaluators.onnx_export import export_legacy as _export_legacy
from search_spaces.errors import ExportError, RunFailure
from search_spaces.serialize import atomic_write
from search_spaces.spec import ArchSpec

log = logging.getLogger(__name__)
# Below this largest |logit| float32 arithmetic underflows and no output difference means anything.
MIN_LOGIT_SCALE = 1e-20


@dataclass(frozen=True)
class TorchScriptInfo:
    """How the TorchScript file was made and how closely it reproduces PyTorch."""

    mode: str  # script or trace
    max_abs_diff: float


@dataclass(frozen=True)
class OnnxInfo:
    """How an ONNX file was made and how closely onnxruntime reproduces PyTorch."""

    exporter: str  # legacy (TorchScript-based) or dynamo (torch.export-based)
    opset: int
    max_abs_diff: float


@dataclass(frozen=True)
class ExportChecks:
    """How closely every exported format reproduces PyTorch: the accepted difference
    (``tolerance`` = ``atol`` + ``rtol`` x ``max_abs_logit``) and each format's check (None: not written)."""

    atol: float
    rtol: float
    max_abs_logit: float
    tolerance: float
    torchscript: TorchScriptInfo | None = None
    onnx: OnnxInfo | None = None

    def to_json(self) -> dict[str, Any]:
        """The flat object ``export.json`` holds under ``checks``."""
        out: dict[str, Any] = {"atol": self.atol, "rtol": self.rtol, "max_abs_logit": self.max_abs_logit,
                               "tolerance": self.tolerance}
        if self.torchscript is not None:
            out.update(torchscript_mode=self.torchscript.mode,
                       torchscript_max_abs_diff=self.torchscript.max_abs_diff)
        if self.onnx is not None:
            out.update(onnx_exporter=self.onnx.exporter, onnx_opset=self.onnx.opset,
                       onnx_max_abs_diff=self.onnx.max_abs_diff)
        return out


def check_input(spec: ArchSpec, batch: int = 2, *, seed: int = 0) -> torch.Tensor:
    """A fixed random input of ``spec``'s shape (batch > 1 checks the dynamic batch axis)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, spec.in_channels, spec.resolution, spec.resolution, generator=generator)


def check_tolerances(atol: float, rtol: float, *, prefix: str = "") -> None:
    """Raise :class:`ExportError` unless ``atol >= 0`` and ``rtol > 0`` are finite numbers."""
    for name, value, low in (("atol", atol, ">= 0"), ("rtol", rtol, "> 0")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0 or (name == "rtol" and value == 0):
            raise ExportError(f"{prefix}{name}: must be a finite number {low}, got {value!r}")


def tolerance(scale: float, atol: float, rtol: float) -> float:
    """The accepted output difference: ``atol + rtol * scale`` (``scale``: the largest |logit|)."""
    return atol + rtol * scale


def check_outputs(artifact: str, max_abs_diff: float, scale: float, atol: float, rtol: float, *,
                  hint: str = "") -> float:
    """The tolerance ``artifact``'s outputs were held to; :class:`RunFailure` if they differ more.

    The criterion is relative (``atol`` defaults to 0): an untrained network's logits are ~1e-6, so
    an absolute tolerance would let any artifact pass."""
    limit = tolerance(scale, atol, rtol)
    if not max_abs_diff <= limit:
        raise RunFailure(f"{artifact}: outputs differ from PyTorch by {max_abs_diff:.3g}, more than "
                         f"the tolerance {limit:.3g} (= atol {atol:g} + rtol {rtol:g} x max |logit| "
                         f"{scale:.3g}); the file does not reproduce the network{hint}")
    return limit


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def write_torchscript(model: nn.Module, path: Path, inputs: torch.Tensor) -> TorchScriptInfo:
    """Script (or, failing that, trace) ``model``, save it, reload it and compare outputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still supported
        try:
            module, mode = torch.jit.script(model), "script"
        except Exception:  # scripting failed; tracing is exact for these static networks
            module, mode = torch.jit.trace(model, inputs), "trace"
        atomic_write(path, lambda tmp: torch.jit.save(module, tmp))
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return TorchScriptInfo(mode=mode, max_abs_diff=_max_abs_diff(loaded(inputs), model(inputs)))


def _run_onnx(path: Path, inputs: torch.Tensor) -> torch.Tensor:
    import onnx
    import onnxruntime

    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})
    return torch.from_numpy(output)


def check_onnx_options(opset: int, exporter: str, *, prefix: str = "") -> None:
    """Raise :class:`ExportError` for an unknown exporter or an opset it cannot write; the
    fields are named with ``prefix`` (``export.`` on the command line)."""
    if exporter not in ONNX_EXPORTERS:
        raise ExportError(f"{prefix}onnx_exporter: {exporter!r} is not one of {', '.join(ONNX_EXPORTERS)}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ExportError(f"{prefix}opset: must be >= {MIN_OPSET}, got {opset!r}")
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise ExportError(f"{prefix}opset: the dynamo exporter writes opset >= {DYNAMO_MIN_OPSET}, "
                          f"got {opset}; use opset={DYNAMO_MIN_OPSET} or onnx_exporter=legacy")


def write_onnx(model: nn.Module, path: Path, inputs: torch.Tensor, *, opset: int = MIN_OPSET,
               exporter: str = "auto") -> OnnxInfo:
    """Export ``model`` to ONNX (batch axis dynamic), run it with onnxruntime and compare.

    ``exporter``: ``legacy`` (TorchScript-based, any opset >= 17; deprecated in torch but still
    shipped), ``dynamo`` (torch.export-based, opset >= 18) or ``auto`` (legacy, else dynamo at
    ``max(opset, 18)``)."""
    import onnx

    check_onnx_options(opset, exporter)
    used = exporter
    if exporter in ("auto", "legacy"):
        try:
            atomic_write(path, lambda tmp: _export_legacy(model, inputs, tmp, opset))
            used = "legacy"
        except Exception as err:  # the legacy exporter may be gone from this torch
            if exporter == "legacy":
                raise ExportError(f"model.onnx: the legacy ONNX exporter failed: {err}") from err
            log.warning("legacy ONNX exporter failed (%s); using the dynamo exporter", err)
            used = "dynamo"
    if used == "dynamo":
        opset = max(opset, DYNAMO_MIN_OPSET)
        try:
            atomic_write(path, lambda tmp: _export_dynamo(model, inputs, tmp, opset))
        except ExportError:
            raise
        except Exception as err:  # report any exporter failure as an export error
            raise ExportError(f"model.onnx: the dynamo ONNX exporter failed: {err}") from err
    try:
        output = _run_onnx(path, inputs)
    except Exception as err:  # an unloadable file is a failed check
        raise RunFailure(f"{path.name}: onnxruntime could not run the exported model: {err}") from err
    imports = {o.domain: o.version for o in onnx.load(str(path), load_external_data=False).opset_import}
    written = int(imports.get("", imports.get("ai.onnx", opset)))
    with torch.no_grad():
        diff = _max_abs_diff(output, model(inputs))
    return OnnxInfo(exporter=used, opset=written, max_abs_diff=diff)
