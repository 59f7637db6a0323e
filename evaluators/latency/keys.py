"""Layer keys (``Layer.key``, e.g. ``block:r56:c24:ir_k3_e72_c24_s1_re``) back to layers."""

from __future__ import annotations

import re

from search_spaces.blockstring import from_string
from search_spaces.errors import LatencyError, SpecError
from search_spaces.spec import Layer

FIELD_COLUMNS = ("kind", "resolution", "in_channels", "op")  # the fields a key is made of
KEY = re.compile(r"^(stem|block|head):r(\d+):c(\d+):(\S+)$")
_FILLER_BLOCK = "ir_k3_e16_c16_s1_re"  # completes a spec string around a lone stem or head token


def compose_key(kind: str, resolution: int | str, in_channels: int | str, op: str) -> str:
    """The key of a layer given by its fields (``op`` is the layer's spec token)."""
    return f"{kind}:r{resolution}:c{in_channels}:{op}"


def layer_from_key(key: str) -> Layer:
    """The :class:`Layer` whose ``key`` is ``key``; :class:`LatencyError` says what is wrong."""
    match = KEY.match(key.strip()) if isinstance(key, str) else None
    if not match:
        raise LatencyError(
            f"layer key {key!r} is malformed; expected <kind>:r<resolution>:c<in_channels>:<token> "
            "with kind stem|block|head, e.g. block:r56:c24:ir_k3_e72_c24_s1_re"
        )
    kind, resolution, in_channels, token = (
        match.group(1),
        int(match.group(2)),
        int(match.group(3)),
        match.group(4),
    )
    expected = {"stem": "stem_", "block": "ir_", "head": "head_"}[kind]
    if not token.startswith(expected):
        raise LatencyError(f"layer key {key!r}: a {kind} layer needs a token starting with {expected!r}")
    try:
        if kind == "stem":
            layer = Layer(kind, resolution, in_channels, from_string(f"{token} {_FILLER_BLOCK}").stem)
        elif kind == "block":
            layer = Layer(kind, resolution, in_channels, from_string(token).blocks[0])
        else:
            spec = from_string(f"{_FILLER_BLOCK} {token}")
            layer = Layer(kind, resolution, in_channels, spec.head, spec.num_classes)
    except SpecError as err:
        raise LatencyError(f"layer key {key!r}: {err}") from None
    if resolution < 1 or in_channels < 1:
        raise LatencyError(f"layer key {key!r}: resolution and channels must be >= 1")
    if layer.key != key.strip():
        raise LatencyError(f"layer key {key!r} is not in canonical form; write it as {layer.key!r}")
    return layer
