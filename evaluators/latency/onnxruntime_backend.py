"""Latency under ``runtime=onnxruntime``: a layer, network or module exported with the project's
ONNX exporter (:mod:`evaluators.onnx_export`, as ``mobilenas export`` writes networks) and timed
in an ``onnxruntime.InferenceSession`` with the session settings of the device kit
(:func:`evaluators.latency.kit_bench.make_session`), so that figures measured here and on a device
mean the same thing.

Exported layers and networks are cached by layer key / spec string in a temporary folder of
the process (removed at exit): a table build exports each layer once.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evaluators.latency.kit_bench import KitError, make_session, session_runner
from evaluators.latency.protocol import LatencyProtocol
from evaluators.onnx_export import DYNAMO_MIN_OPSET, MIN_OPSET, export_dynamo, export_legacy
from search_spaces.builder import build_layer, build_model, init_weights
from search_spaces.errors import LatencyError
from search_spaces.serialize import atomic_write
from search_spaces.spec import ArchSpec, Layer

log = logging.getLogger(__name__)
_cache_dir: Path | None = None


def export_onnx(module: nn.Module, x: torch.Tensor, path: Path) -> Path:
    """Export ``module`` (eval mode) to ``path`` for input ``x`` with the project's exporter
    (batch axis dynamic): the legacy exporter, else the dynamo one (as ``mobilenas export``)."""
    with torch.inference_mode(False), torch.no_grad():
        module, x = _plain(module).eval(), x.clone()
        try:
            atomic_write(path, lambda tmp: export_legacy(module, x, tmp, MIN_OPSET))
        except Exception as err:  # the legacy exporter may be gone from this torch
            log.warning("legacy ONNX exporter failed (%s); using the dynamo exporter", err)
            atomic_write(path, lambda tmp: export_dynamo(module, x, tmp, DYNAMO_MIN_OPSET))
    return path


def _plain(module: nn.Module) -> nn.Module:
    """``module`` with parameters and buffers that are not inference tensors (those built under
    ``torch.inference_mode`` cannot be traced by the exporter)."""
    if not any(t.is_inference() for t in [*module.parameters(), *module.buffers()]):
        return module
    with torch.inference_mode(False):
        for sub in module.modules():
            for name, param in list(sub.named_parameters(recurse=False)):
                setattr(sub, name, nn.Parameter(param.clone(), requires_grad=False))
            for name, buffer in list(sub.named_buffers(recurse=False)):
                sub.register_buffer(name, buffer.clone())
    return module


def export_layer(layer: Layer, path: Path, batch: int = 1) -> Path:
    """``layer`` built alone (initialized as in a network) and exported to ``path``."""
    with torch.random.fork_rng(devices=[]):
        module = build_layer(layer)
        init_weights(module)
    x = torch.randn(batch, layer.in_channels, layer.resolution, layer.resolution)
    return export_onnx(module, x, path)


def export_network(spec: ArchSpec, path: Path, batch: int = 1) -> Path:
    """The network of ``spec`` exported to ``path``."""
    with torch.random.fork_rng(devices=[]):
        module = build_model(spec)
    x = torch.randn(batch, spec.in_channels, spec.resolution, spec.resolution)
    return export_onnx(module, x, path)


def export_key(target: Any) -> str | None:
    """What an export of ``target`` is cached under: a layer's key, a spec's string; None for a
    module (exported every time)."""
    if isinstance(target, Layer):
        return f"layer {target.key}"
    if isinstance(target, ArchSpec):
        return f"spec {target}"
    return None


def _cache() -> Path:
    global _cache_dir
    if _cache_dir is None:
        _cache_dir = Path(tempfile.mkdtemp(prefix="mobilenas-onnx-"))
        atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    return _cache_dir


def onnxruntime_runner(
    module: nn.Module, x: torch.Tensor, protocol: LatencyProtocol, *, key: str | None = None
) -> tuple[Callable[[Any], Any], Any]:
    """``(run, feed)``: ``run(feed)`` is one timed ``session.run`` of ``module`` exported (cached
    under ``key``) and loaded under ``protocol``'s onnxruntime settings, on input ``x``."""
    if key is None:
        path = Path(tempfile.mkstemp(suffix=".onnx", dir=_cache())[1])
    else:
        path = _cache() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.onnx"
    if key is None or not path.exists():
        export_onnx(module, x, path)
    try:
        session = make_session(path, threads=protocol.threads, optimization=str(protocol.ort_optimization),
                               provider=str(protocol.ort_provider))
    except KitError as err:
        raise LatencyError(f"latency.{err}") from None
    if key is None:
        path.unlink()
    call = session_runner(session, x.detach().cpu().numpy())
    return (lambda _feed: call()), None
