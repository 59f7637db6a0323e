"""Published MobileNetV3 weights in our networks: torchvision and timm state_dicts, mapped by name.

Sources (detected from the keys):

* ``torchvision``: ``mobilenet_v3_large`` / ``mobilenet_v3_small`` (``features.N.block.J...``,
  ``classifier.0`` a Linear that becomes our 1x1 ``head.hidden`` conv). Same BatchNorm eps as ours.
* ``timm``: ``mobilenetv3_large_100 / _075``, ``mobilenetv3_small_100 / _075`` (``conv_stem``,
  ``blocks.S.I...``, ``conv_head``). timm's BatchNorm eps is 1e-5, ours 1e-3: each BN weight is
  scaled by ``sqrt((var + 1e-3) / (var + 1e-5))`` so that inference is exact. timm rounds the
  expansion widths of its ``_075`` networks from the rounded block input (see :func:`timm_spec`).
  timm's ``tf_*`` ports (TF "same" padding) have the same keys and cannot be told apart: not supported.
* ``mobilenas``: our own state_dict (``stem.0.weight``, ...), e.g. a run's ``weights.safetensors``.

A file that does not fit the spec is refused (:class:`DataError`) naming the first tensor that
differs, never loaded in part.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from evaluators.training.checkpoint import load_error_reason
from search_spaces.blocks import BN_EPS
from search_spaces.builder import build_model
from search_spaces.errors import DataError
from search_spaces.reference import reference_spec
from search_spaces.spec import ArchSpec, BlockSpec, make_divisible

MAX_WEIGHTS_BYTES = 2**30  # a V3-Large state_dict is ~22 MB; 1 GiB bounds what is read
SOURCES = ("torchvision", "timm", "mobilenas")
TIMM_BN_EPS = 1e-5
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_OPTIONAL = "num_batches_tracked"  # may be absent from a published file; ours is kept then

# timm's expansion ratios per bneck row (the ``e`` of its arch_def strings; the first row is a ``ds`` block).
_TIMM_EXP = {
    "mobilenet_v3_large": (1, 4, 3, 3, 3, 3, 6, 2.5, 2.3, 2.3, 6, 6, 6, 6, 6),
    "mobilenet_v3_small": (1, 4.5, 3.67, 4, 6, 6, 3, 3, 6, 6, 6),
}


@dataclass(frozen=True)
class Converted:
    """A source state_dict mapped to our module names."""

    source: str
    state: dict[str, torch.Tensor]  # our keys
    mapped: int  # source tensors mapped (each exactly once)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or torch (``.pth``/``.pt``/``.bin``) file, without running pickled
    code (``weights_only=True``), size-bounded; a dict nested under ``state_dict`` or ``model`` is
    accepted."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"weights: {path} is not a file")
    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise DataError(f"weights: {path} is {size} bytes, above the limit of {MAX_WEIGHTS_BYTES} "
                        "(evaluators.pretrained.MAX_WEIGHTS_BYTES)")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as err:  # safetensors raises its own error types
            raise DataError(f"weights: {path} is not a readable safetensors file ({err})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means a bad file
        reason = load_error_reason(err)
        raise DataError(f"weights: {path} is not a readable weights file ({reason})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise DataError(f"weights: {path} holds no state_dict (a dict of tensors, optionally under "
                        "'state_dict' or 'model')")
    return state


def detect_source(keys: Mapping[str, object] | list[str]) -> str:
    """``torchvision``, ``timm`` or ``mobilenas`` from the key names; a DataError otherwise."""
    names = set(keys)
    if "features.0.0.weight" in names:
        return "torchvision"
    if "conv_stem.weight" in names:
        return "timm"
    if "stem.0.weight" in names:
        return "mobilenas"
    first = next(iter(keys), "")
    raise DataError(f"weights: not a torchvision, timm or mobilenas MobileNetV3 state_dict (first key "
                    f"{first!r}; expected features.0.0.weight, conv_stem.weight or stem.0.weight)")


def timm_spec(reference: str, width_mult: float = 1.0, **kwargs: object) -> ArchSpec:
    """The reference as timm builds it: expansion widths are ``make_divisible(rounded_in * e)``,
    the hidden head width is never scaled. Equal to :func:`reference_spec` at width 1.0."""
    spec = reference_spec(reference, width_mult=width_mult, **kwargs)  # type: ignore[arg-type]
    in_chs, blocks = spec.stem.channels, []
    for block, ratio in zip(spec.blocks, _TIMM_EXP[reference], strict=True):
        blocks.append(replace(block, exp=in_chs if ratio == 1 else make_divisible(in_chs * ratio)))
        in_chs = block.out
    hidden = {"mobilenet_v3_large": 1280, "mobilenet_v3_small": 1024}[reference]
    return replace(spec, blocks=tuple(blocks), head=replace(spec.head, hidden=hidden))


def source_spec(source: str, spec: ArchSpec, reference: str | None, width_mult: float = 1.0) -> ArchSpec:
    """The spec the weights' source builds for ``reference`` (a reference name, or None for a spec
    given as such) at width multipliers other than 1: timm's own expansion widths; torchvision's hidden
    head width scaled below 1 too (``adjust_channels(1280)``); ``spec`` otherwise."""
    if reference not in _TIMM_EXP or width_mult == 1.0 or source not in ("timm", "torchvision"):
        return spec
    if source == "torchvision":
        hidden = {"mobilenet_v3_large": 1280, "mobilenet_v3_small": 1024}[reference]
        return replace(spec, head=replace(spec.head, hidden=make_divisible(hidden * width_mult)))
    timm = timm_spec(reference, width_mult)
    return replace(timm, num_classes=spec.num_classes, resolution=spec.resolution,
                   in_channels=spec.in_channels)


def _expand(pairs: list[tuple[str, str, str]]) -> dict[str, str]:
    """(source prefix, our prefix, kind) -> {source key: our key}."""
    params = {"conv": ("weight",), "bn": _BN, "affine": ("weight", "bias")}
    return {f"{src}.{name}": f"{ours}.{name}" for src, ours, kind in pairs for name in params[kind]}


def _block_modules(spec: ArchSpec) -> list[list[tuple[str, str]]]:
    """Per bneck, our (module, kind) in forward order: expand, dw, se, project."""
    out = []
    for i, layer in enumerate(list(spec.layers())[1:-1]):
        block, mods = layer.op, []
        assert isinstance(block, BlockSpec)  # layers between the stem and the head are bnecks
        if block.has_expansion(layer.in_channels):
            mods += [(f"blocks.{i}.expand.0", "conv"), (f"blocks.{i}.expand.1", "bn")]
        mods += [(f"blocks.{i}.dw.0", "conv"), (f"blocks.{i}.dw.1", "bn")]
        if block.se:
            mods += [(f"blocks.{i}.se.reduce", "affine"), (f"blocks.{i}.se.expand", "affine")]
        out.append(mods + [(f"blocks.{i}.project.0", "conv"), (f"blocks.{i}.project.1", "bn")])
    return out


def torchvision_keys(spec: ArchSpec) -> dict[str, str]:
    """{torchvision key: our key} for ``spec`` in torchvision's MobileNetV3 layout."""
    pairs = [("features.0.0", "stem.0", "conv"), ("features.0.1", "stem.1", "bn")]
    for n, mods in enumerate(_block_modules(spec), start=1):
        j = 0
        for ours, kind in mods:
            if ours.endswith(".se.reduce"):
                pairs.append((f"features.{n}.block.{j}.fc1", ours, kind))
            elif ours.endswith(".se.expand"):
                pairs.append((f"features.{n}.block.{j}.fc2", ours, kind))
                j += 1
            else:
                pairs.append((f"features.{n}.block.{j}.{ours[-1]}", ours, kind))
                j += ours.endswith(".1")
    last = len(spec.blocks) + 1
    pairs += [(f"features.{last}.0", "head.conv.0", "conv"), (f"features.{last}.1", "head.conv.1", "bn"),
              ("classifier.0", "head.hidden", "affine"), ("classifier.3", "head.classifier", "affine")]
    return _expand(pairs)


_TIMM_IR = {"expand.0": "conv_pw", "expand.1": "bn1", "dw.0": "conv_dw", "dw.1": "bn2",
            "se.reduce": "se.conv_reduce", "se.expand": "se.conv_expand", "project.0": "conv_pwl",
            "project.1": "bn3"}
_TIMM_DS = {"dw.0": "conv_dw", "dw.1": "bn1", "se.reduce": "se.conv_reduce", "se.expand": "se.conv_expand",
            "project.0": "conv_pw", "project.1": "bn2"}


def timm_positions(keys: list[str]) -> list[str]:
    """timm's block prefixes ``blocks.S.I`` in the file, in forward order."""
    found = {(int(m[1]), int(m[2])) for m in (re.match(r"blocks\.(\d+)\.(\d+)\.", k) for k in keys) if m}
    return [f"blocks.{s}.{i}" for s, i in sorted(found)]


def timm_keys(spec: ArchSpec, positions: list[str]) -> dict[str, str]:
    """{timm key: our key} for ``spec``, the bnecks at ``positions`` (then the last 1x1 conv)."""
    modules = _block_modules(spec)
    if len(positions) != len(modules) + 1:
        raise DataError(f"weights: the timm state_dict has {len(positions)} blocks (blocks.S.I, the last "
                        f"1x1 conv included); the spec has {len(modules)} bnecks + that conv")
    pairs = [("conv_stem", "stem.0", "conv"), ("bn1", "stem.1", "bn")]
    for prefix, mods in zip(positions, modules, strict=False):
        names = _TIMM_IR if mods[0][0].endswith("expand.0") else _TIMM_DS
        pairs += [(f"{prefix}.{names[ours.split('.', 2)[2]]}", ours, kind) for ours, kind in mods]
    pairs += [(f"{positions[-1]}.conv", "head.conv.0", "conv"), (f"{positions[-1]}.bn1", "head.conv.1", "bn"),
              ("conv_head", "head.hidden", "affine"), ("classifier", "head.classifier", "affine")]
    return _expand(pairs)


def key_map(spec: ArchSpec, source: str, keys: list[str]) -> dict[str, str]:
    """{source key: our key} for ``spec`` in ``source``'s layout."""
    if source == "torchvision":
        return torchvision_keys(spec)
    if source == "timm":
        return timm_keys(spec, timm_positions(keys))
    return {k: k for k in build_model(spec).state_dict()}


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "scalar"


def _fold_bn_eps(state: dict[str, torch.Tensor], eps: float) -> None:
    """Rescale each BN's weight so that our eps gives the outputs ``eps`` gave (inference)."""
    for key in [k for k in state if k.endswith(".running_var")]:
        prefix = key[: -len("running_var")]
        var = state[key].double()
        scale = torch.sqrt((var + BN_EPS) / (var + eps))
        weight = state[prefix + "weight"]
        state[prefix + "weight"] = (weight.double() * scale).to(weight.dtype)


def convert(state: Mapping[str, torch.Tensor], spec: ArchSpec, *, where: str = "weights",
            skip_classifier: bool = False) -> Converted:
    """Map ``state`` (any supported source) onto a network built from ``spec``.

    ``skip_classifier``: the classifier is not loaded when its class count differs (fine-tuning on
    another data set). Raises DataError naming the first missing, unexpected or mis-shaped tensor."""
    keys = list(state)
    source = detect_source(keys)
    mapping = key_map(spec, source, keys)
    ours = build_model(spec).state_dict()
    for src in keys:
        if src not in mapping:
            raise DataError(f"{where}: {source} tensor {src} ({_shape(state[src])}) has no place in the "
                            "spec's network; the file does not fit the spec")
    out: dict[str, torch.Tensor] = {}
    for src, dst in mapping.items():
        if src not in state:
            if dst.endswith(_OPTIONAL):
                continue
            raise DataError(f"{where}: {source} tensor {src} (our {dst}, {_shape(ours[dst])}) is missing "
                            "from the file; the file does not fit the spec")
        tensor = state[src]
        if source == "torchvision" and src == "classifier.0.weight" and tensor.dim() == 2:
            tensor = tensor[:, :, None, None]  # Linear -> 1x1 conv
        if tensor.shape != ours[dst].shape:
            new_classes = dst.startswith("head.classifier.") and tensor.shape[1:] == ours[dst].shape[1:]
            if skip_classifier and new_classes:
                continue
            raise DataError(f"{where}: {source} tensor {src} is {_shape(tensor)}, the spec's {dst} is "
                            f"{_shape(ours[dst])}; the file does not fit the spec")
        out[dst] = tensor.detach().clone()
    if source == "timm":
        _fold_bn_eps(out, TIMM_BN_EPS)
    return Converted(source, out, len(keys))


def load_into(model: nn.Module, converted: Converted) -> list[str]:
    """Copy the converted tensors into ``model``; the names it kept its own values for."""
    missing, unexpected = model.load_state_dict(converted.state, strict=False)
    if unexpected:  # convert() checked the names against the same spec: a bug if it happens
        raise RuntimeError(f"unexpected keys after conversion: {unexpected[:3]}")
    return list(missing)


# The eval transform's resampling each source states (torchvision's ImageClassification preset;
# timm's pretrained_cfg of the mobilenetv3 weights); both resize to 256 and crop 224.
INTERPOLATION = {"torchvision": "bilinear", "timm": "bicubic", "mobilenas": "bilinear"}
# Published ImageNet-1k validation top-1 / top-5 of each source's weights (224x224).
PUBLISHED = {
    ("torchvision", "mobilenet_v3_large", 1.0): ("torchvision IMAGENET1K_V1", 74.042, 91.340),
    ("torchvision", "mobilenet_v3_small", 1.0): ("torchvision IMAGENET1K_V1", 67.668, 87.402),
    ("timm", "mobilenet_v3_large", 1.0): ("timm mobilenetv3_large_100.ra_in1k", 75.766, 92.538),
    ("timm", "mobilenet_v3_small", 1.0): ("timm mobilenetv3_small_100.lamb_in1k", 67.656, 87.636),
    ("timm", "mobilenet_v3_small", 0.75): ("timm mobilenetv3_small_075.lamb_in1k", 65.234, 85.446),
}
