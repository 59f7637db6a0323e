"""Export of an architecture (and its weights) for deployment, and loading an export back.

An export directory holds::

    spec.json  spec.yaml  spec.txt     the spec in its three serial forms
    weights.safetensors                state_dict, buffers included (BN running stats)
    model.torchscript.pt               TorchScript (scripted), optional
    model.onnx                         ONNX, batch axis dynamic, optional
    MODEL_CARD.md                      layer table, params/MAdds, latency, accuracy, provenance
    export.json                        the same, machine-readable, with SHA-256 of every file

The directory is built beside its destination and renamed into place at the end, so a crash
leaves no half-written export. Every artifact is checked: TorchScript and ONNX (onnxruntime)
outputs are compared with PyTorch's on a fixed random input, relative to the largest logit (an
untrained network's are ~1e-6), and a check that fails raises :class:`RunFailure` (a
failed run, exit 1); bad input raises :class:`ExportError`.

Paths: a name (:func:`check_name`) is one path component, never a path. An existing directory is
replaced (``overwrite``) only if it holds a valid ``export.json``, and never through a symbolic
link; nothing outside the destination's parent is written or removed. Loading verifies every file
it reads against the SHA-256 in ``export.json`` (``verify=False`` skips that).

Example::

    result = export_model(spec, model, "runs/export/my_net", metadata={"latency_ms": 5.1, ...})
    spec, model = load_exported("runs/export/my_net")
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from evaluators.cost import Cost, count_cost
from evaluators.training import save_weights
from search.export_formats import (
    MIN_LOGIT_SCALE,
    MIN_OPSET,
    ExportChecks,
    check_input,
    check_onnx_options,
    check_outputs,
    check_tolerances,
    tolerance,
    write_onnx,
    write_torchscript,
)
from search.model_card import render_model_card
from search_spaces import serialize
from search_spaces.builder import MobileNetV3Like, build_model
from search_spaces.errors import ExportError, MobilenasError
from search_spaces.spec import ArchSpec

__all__ = ["ExportOptions", "ExportResult", "check_name", "export_dir",
           "export_model", "export_run", "load_exported", "materialize", "read_manifest", "read_weights",
           "safe_name", "verify_export", "EXPORT_FORMAT"]

EXPORT_FORMAT = 1
SPEC_FILES = ("spec.json", "spec.yaml", "spec.txt")
WEIGHTS = "weights.safetensors"
TORCHSCRIPT = "model.torchscript.pt"
ONNX = "model.onnx"
CARD = "MODEL_CARD.md"
MANIFEST = "export.json"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers
_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")


@dataclass
class ExportOptions:
    """Which formats to write and how strictly to check them (the schema of export settings)."""

    onnx: bool = True  # model.onnx, run by onnxruntime and compared with PyTorch
    torchscript: bool = True  # model.torchscript.pt, reloaded and compared
    opset: int = MIN_OPSET  # >= 17; the dynamo exporter writes >= 18
    onnx_exporter: str = "auto"  # auto (legacy if available, else dynamo) | legacy | dynamo
    rtol: float = 1e-4  # accepted output difference, relative to the largest |logit| ...
    atol: float = 0.0  # ... plus this absolute allowance


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote: the directory, each file's SHA-256, costs and checks."""

    out_dir: Path
    spec: ArchSpec
    files: dict[str, str]
    cost: Cost
    checks: ExportChecks
    metadata: dict[str, Any] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.out_dir / name


def _strip_wrappers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def materialize(spec: ArchSpec, weights: nn.Module | Mapping[str, torch.Tensor] | None, *,
                seed: int = 0, where: str = "weights") -> MobileNetV3Like:
    """``build_model(spec)`` on CPU in eval mode with ``weights`` (a module or a state_dict) loaded
    strictly; with ``weights=None``, initialization seeded by ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
    own_spec = getattr(weights, "spec", None)
    if isinstance(own_spec, ArchSpec) and own_spec != spec:
        raise ExportError(f"{where}: the model was built from {own_spec}, not from the spec to export "
                          f"{spec}")
    if weights is not None:
        state = weights.state_dict() if isinstance(weights, nn.Module) else weights
        state = {k: v.detach().cpu() for k, v in _strip_wrappers(state).items()}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            expected = model.state_dict().keys()
            missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
            if missing or unexpected:
                detail = (f"missing {', '.join(missing[:5]) or '-'}; "
                          f"unexpected {', '.join(unexpected[:5]) or '-'}")
            else:  # same keys, other shapes
                detail = str(err).splitlines()[-1].strip()
            raise ExportError(f"{where}: do not match the spec {spec} ({detail})") from None
    return model.eval()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    return obj.item() if hasattr(obj, "item") else str(obj)  # numpy/torch scalars, paths, ...


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (dataclasses as dicts, numpy scalars as numbers, others as text)."""
    return json.loads(json.dumps(value, default=_plain))


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version()}


def _logit_scale(model: MobileNetV3Like, inputs: torch.Tensor, *, checked: bool) -> float:
    """The largest |logit| on the check input; non-finite, or too small to compare (when ``checked``),
    is an :class:`ExportError`."""
    with torch.no_grad():
        scale = float(model(inputs).abs().max())
    if not math.isfinite(scale):
        raise ExportError(f"{WEIGHTS}: the network gives non-finite outputs (NaN/inf) on a random input; "
                          "the weights look diverged")
    if checked and not scale >= MIN_LOGIT_SCALE:
        raise ExportError(f"{WEIGHTS}: the network's logits are all ~0 (max {scale:.3g}) on a random input, "
                          "so no TorchScript/ONNX output check can mean anything; export it with "
                          "onnx=false torchscript=false")
    return scale


def _write_files(tmp: Path, spec: ArchSpec, model: MobileNetV3Like, metadata: dict[str, Any], *,
                 onnx: bool, torchscript: bool, opset: int, onnx_exporter: str, atol: float,
                 rtol: float) -> ExportResult:
    for name in SPEC_FILES:
        serialize.save_spec(spec, tmp / name)
    # One metadata key: safetensors orders several keys at random, and identical weights should
    # give identical files.
    save_weights(model, tmp / WEIGHTS, metadata={"mobilenas_spec": str(spec)})
    inputs = check_input(spec)
    scale = _logit_scale(model, inputs, checked=onnx or torchscript)
    script_info = onnx_info = None
    if torchscript:
        script_info = write_torchscript(model, tmp / TORCHSCRIPT, inputs)
        check_outputs(TORCHSCRIPT, script_info.max_abs_diff, scale, atol, rtol)
    if onnx:
        onnx_info = write_onnx(model, tmp / ONNX, inputs, opset=opset, exporter=onnx_exporter)
        check_outputs(f"{ONNX} (onnxruntime)", onnx_info.max_abs_diff, scale, atol, rtol,
                      hint="; try onnx_exporter=dynamo or a higher opset")
    checks = ExportChecks(atol=atol, rtol=rtol, max_abs_logit=scale, tolerance=tolerance(scale, atol, rtol),
                          torchscript=script_info, onnx=onnx_info)
    files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
    cost = count_cost(spec)
    serialize.atomic_write_text(tmp / CARD, render_model_card(spec, metadata, cost=cost, files=files,
                                                              checks=checks))
    manifest = {
        "format": EXPORT_FORMAT,
        "name": metadata.get("name"),
        "spec": str(spec),
        "trained": metadata.get("trained", True),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cost": asdict(cost),
        "checks": checks.to_json(),
        "files": files,
        "metadata": metadata,
        "versions": _versions(),
    }
    serialize.atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return ExportResult(out_dir=tmp, spec=spec, files=files, cost=cost, checks=checks, metadata=metadata)


def check_name(name: str, *, field: str = "name") -> str:
    """``name`` if it is one path component of letters, digits, '.', '_', '-' (not '.' or '..');
    else an :class:`ExportError` naming ``field``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise ExportError(f"{field}: {name!r} is not a name; use 1-255 letters, digits, '.', '_' or '-' "
                          "(one path component, not '.' or '..'); give a directory with out=")
    return name


def safe_name(text: str, default: str = "export") -> str:
    """``text`` made a valid :func:`check_name` name (other characters become '_')."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:255].strip("_")
    return name if name and name not in (".", "..") else default


def export_dir(root: str | os.PathLike[str], name: str, *, field: str = "name") -> Path:
    """``root/name`` after checking that ``name`` is a name and that the path, symbolic links
    resolved, stays inside ``root``."""
    root, name = Path(root), check_name(name, field=field)
    out = root / name
    real_root = root.resolve()
    if out.resolve().parent != real_root or out.is_symlink():
        raise ExportError(f"{field}: {out} resolves to {out.resolve()}, outside the export root {real_root}; "
                          "give a directory with out=")
    return out


def read_manifest(root: Path) -> dict[str, Any]:
    """``root/export.json`` as a dict with a ``files`` mapping; :class:`ExportError` if missing or invalid."""
    path = root / MANIFEST
    if not path.is_file():
        raise ExportError(f"{path}: missing; not an export directory written by 'mobilenas export'")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: corrupt export manifest ({err})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) \
            or not isinstance(manifest.get("format"), int):
        raise ExportError(f"{path}: corrupt export manifest (expected an object with 'format' and 'files')")
    return manifest


def _check_destination(out: Path, *, overwrite: bool) -> None:
    """Refuse a destination that is a symbolic link, or exists and may not be replaced: without
    ``overwrite``, or when it is not an earlier export (no valid ``export.json``)."""
    if out.is_symlink():
        raise ExportError(f"{out}: is a symbolic link; an export directory is written or replaced only in "
                          "place, give the real path as out=")
    if not out.exists():
        return
    if not overwrite:
        raise ExportError(f"{out}: already exists; choose another out= or pass overwrite=true")
    if not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory")
    try:
        read_manifest(out)
    except ExportError as err:
        raise ExportError(f"{out}: overwrite=true replaces only an earlier export, and this is not one "
                          f"({err}); choose another out= or remove it yourself") from None


def _move_into_place(tmp: Path, out: Path, *, overwrite: bool) -> None:
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700; the files inside come from atomic_write, already open
    _check_destination(out, overwrite=overwrite)  # again: it may have changed during the export
    if out.exists():
        # The old directory is moved into a fresh temporary directory beside it and removed there;
        # rmtree does not follow symbolic links inside it.
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def export_model(spec: ArchSpec, model: nn.Module | Mapping[str, torch.Tensor] | None,
                 out_dir: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None,
                 onnx: bool = True, torchscript: bool = True, opset: int = MIN_OPSET,
                 onnx_exporter: str = "auto", rtol: float = 1e-4, atol: float = 0.0,
                 overwrite: bool = False, seed: int = 0) -> ExportResult:
    """Write ``spec`` and its network to the directory ``out_dir`` (see the module docstring).

    Args:
        spec: the architecture.
        model: a network built from ``spec`` (any device, any mode; it is not modified), its
            state_dict, or None for an untrained export (initialization seeded by ``seed``).
        out_dir: the export directory; it must not exist unless ``overwrite``, and then it must
            hold an earlier export (a valid ``export.json``); never a symbolic link.
        metadata: latency (``latency_ms``, ``protocol``), accuracy (``accuracy``/``top1``,
            ``data``, ``budget``), ``provenance``, ``name`` and any other JSON-able keys; see
            :mod:`search.model_card`.
        onnx, torchscript: which deployment formats to write and check.
        opset: ONNX opset (>= 17). onnx_exporter: ``auto``, ``legacy`` or ``dynamo``.
        rtol, atol: the largest accepted output difference of TorchScript/ONNX vs PyTorch is
            ``atol + rtol * max|logit|`` on the check input.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ExportError: bad input: ``out_dir`` may not be written, weights do not match ``spec``, ...
        RunFailure: a written artifact does not reproduce the network (nothing is left behind).
    """
    if not isinstance(spec, ArchSpec):
        raise ExportError(f"spec: expected an ArchSpec, got {type(spec).__name__}")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ExportError(f"metadata: expected a mapping, got {type(metadata).__name__}")
    if onnx:
        check_onnx_options(opset, onnx_exporter)
    check_tolerances(atol, rtol)
    out = Path(out_dir)
    _check_destination(out, overwrite=overwrite)
    meta = _jsonable(dict(metadata or {}))
    meta.setdefault("name", out.name)
    if model is None:
        meta["trained"] = False
        meta.setdefault("init_seed", seed)
    else:
        meta.setdefault("trained", True)
    net = materialize(spec, model, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        written = _write_files(tmp, spec, net, meta, onnx=onnx, torchscript=torchscript, opset=opset,
                               onnx_exporter=onnx_exporter, atol=atol, rtol=rtol)
        _move_into_place(tmp, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out_dir=out, spec=spec, files=written.files, cost=written.cost, checks=written.checks,
                        metadata=meta)


def export_run(spec: ArchSpec, model: nn.Module | Mapping[str, torch.Tensor] | None,
               out_dir: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None,
               options: ExportOptions | None = None) -> ExportResult:
    """What search/refine call at the end of a run: :func:`export_model` with ``options`` that
    replaces an earlier export in ``out_dir`` (a resumed run exports again; anything else there is
    refused)."""
    return export_model(spec, model, out_dir, metadata=metadata, overwrite=True,
                        **asdict(options or ExportOptions()))


def read_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state_dict from a safetensors file; a missing or unreadable file is an :class:`ExportError`."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: weights file not found")
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types
        raise ExportError(f"{path}: not a readable safetensors file ({err})") from None


_SKIP = "pass verify=False to load it unchecked"


def verify_export(root: Path, names: tuple[str, ...], *, skip: str = _SKIP) -> None:
    """Check ``names`` in the export directory ``root`` against the SHA-256 in its ``export.json``:
    a missing manifest, a file not listed or listed without a hash, or another hash is an
    :class:`ExportError` that ends with ``skip`` (how to load without the check)."""
    try:
        files = read_manifest(root)["files"]
    except ExportError as err:
        raise ExportError(f"{err}; {skip}") from None
    for name in names:
        expected = files.get(name)
        if not isinstance(expected, str) or not re.fullmatch(r"[0-9a-f]{64}", expected):
            raise ExportError(f"{root / MANIFEST}: {name} is not listed with a SHA-256, so {root / name} "
                              f"cannot be verified; {skip}")
        if _sha256(root / name) != expected:
            raise ExportError(f"{root / name}: SHA-256 differs from {MANIFEST}; the file is corrupt or was "
                              f"changed after export; {skip}")


def load_exported(path: str | os.PathLike[str], *, verify: bool = True) -> tuple[ArchSpec, MobileNetV3Like]:
    """The spec and the network (eval mode, CPU) of an export directory written by
    :func:`export_model`; missing or corrupt files raise :class:`ExportError` naming them.

    With ``verify`` (the default) the files read must match the SHA-256 in ``export.json``;
    ``verify=False`` loads a hand-made or edited directory. Weights are read with safetensors,
    never unpickled."""
    root = Path(path)
    if not root.is_dir():
        raise ExportError(f"{root}: export directory not found")
    for name in ("spec.json", WEIGHTS):
        if not (root / name).is_file():
            raise ExportError(f"{root / name}: missing; an export directory holds spec.json and {WEIGHTS} "
                              "(written by 'mobilenas export')")
    if verify:
        verify_export(root, ("spec.json", WEIGHTS))
    try:
        spec = serialize.load_spec_file(root / "spec.json")
    except MobilenasError as err:
        raise ExportError(str(err)) from None
    model = materialize(spec, read_weights(root / WEIGHTS), where=str(root / WEIGHTS))
    return spec, model
