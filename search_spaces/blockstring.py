"""Parsing the one-line string form of a spec: one token per layer, in the spirit of timm's block
strings. The tokens are written by :class:`~search_spaces.spec.ArchSpec` itself (``str(spec)``).

    in_r224_c3 stem_k3_c16_s2_hs ir_k3_e64_c24_s2_re ir_k5_e72_c40_s2_se_re head_c960_h1280_hs_d0.2_n1000

Each token is a kind (``in``, ``stem``, ``ir``, ``head``) followed by ``_``-separated fields:
a letter prefix and a number (``k3``), a bare flag (``se``) or an activation (``re``/``hs``).
"""

from __future__ import annotations

import math
import re

from search_spaces.errors import SpecError
from search_spaces.spec import ArchSpec, BlockSpec, HeadSpec, StemSpec

_FIELD = re.compile(r"^([a-z]+?)(\d+(?:\.\d+)?)$")
_ALLOWED = {
    "in": {"r", "c"},
    "stem": {"k", "c", "s"},
    "ir": {"k", "e", "c", "s"},
    "head": {"c", "h", "d", "n"},
}
_REQUIRED = {
    "in": set(),
    "stem": set(),
    "ir": {"k", "e", "c", "s"},
    "head": set(),
}


def to_string(spec: ArchSpec) -> str:
    """The canonical one-line form, ``str(spec)``; ``from_string(to_string(s)) == s``."""
    return str(spec)


MAX_CHARS = 100_000  # a spec string longer than this is refused before parsing


def _where(token: str, position: int) -> str:
    shown = token if len(token) <= 60 else f"{token[:57]}..."
    return f"token {position + 1} {shown!r}"


def _parse_token(token: str, position: int) -> tuple[str, dict[str, float], set[str], str | None]:
    where = _where(token, position)
    kind, *parts = token.split("_")
    if kind not in _ALLOWED:
        raise SpecError(f"{where}: unknown kind {kind!r}; allowed: in, stem, ir, head")
    numbers: dict[str, float] = {}
    flags: set[str] = set()
    act: str | None = None
    for part in parts:
        if part in ("re", "hs"):
            if act is not None:
                raise SpecError(f"{where}: activation given twice")
            act = part.upper()
            continue
        if part == "se" and kind == "ir":
            flags.add("se")
            continue
        match = _FIELD.match(part)
        if not match or match.group(1) not in _ALLOWED[kind]:
            allowed = sorted(_ALLOWED[kind]) + (["se"] if kind == "ir" else [])
            hint = "" if kind == "in" else " and an activation re|hs"
            raise SpecError(
                f"{where}: cannot read field {part!r}; {kind} takes "
                f"{', '.join(allowed)} followed by a number{hint}"
            )
        name = match.group(1)
        if name in numbers:
            raise SpecError(f"{where}: field {name!r} given twice")
        numbers[name] = float(match.group(2))
    missing = _REQUIRED[kind] - set(numbers)
    if missing:
        raise SpecError(f"{where}: missing field(s) {', '.join(sorted(missing))}")
    return kind, numbers, flags, act


def _int(numbers: dict[str, float], name: str, default: int, where: str) -> int:
    value = numbers.get(name, default)
    if not math.isfinite(value) or value != int(value):
        raise SpecError(f"{where}: field {name!r} must be an integer, got {value:g}")
    return int(value)


def from_string(text: str) -> ArchSpec:
    """Parse the one-line form. ``in``, ``stem`` and ``head`` may be left out (V3 defaults)."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("spec string is empty; expected tokens like 'ir_k3_e64_c24_s2_re'")
    if len(text) > MAX_CHARS:
        raise SpecError(f"spec string has {len(text):,} characters; at most {MAX_CHARS:,} are read")
    tokens = text.split()
    resolution, in_channels = 224, 3
    stem, head, num_classes = StemSpec(), HeadSpec(), 1000
    blocks: list[BlockSpec] = []
    seen: set[str] = set()
    for position, token in enumerate(tokens):
        kind, numbers, flags, act = _parse_token(token, position)
        where = _where(token, position)
        if kind != "ir":
            if kind in seen:
                raise SpecError(f"{where}: only one {kind!r} token is allowed")
            seen.add(kind)
        try:
            if kind == "in":
                resolution = _int(numbers, "r", 224, where)
                in_channels = _int(numbers, "c", 3, where)
            elif kind == "stem":
                stem = StemSpec(
                    channels=_int(numbers, "c", 16, where),
                    kernel=_int(numbers, "k", 3, where),
                    stride=_int(numbers, "s", 2, where),
                    act=act or "HS",
                )
            elif kind == "head":
                head = HeadSpec(
                    channels=_int(numbers, "c", 960, where),
                    hidden=_int(numbers, "h", 1280, where),
                    act=act or "HS",
                    dropout=numbers.get("d", 0.2),
                )
                num_classes = _int(numbers, "n", 1000, where)
            else:
                if act is None:
                    raise SpecError("missing activation; end the token with _re or _hs")
                blocks.append(
                    BlockSpec(
                        kernel=_int(numbers, "k", 0, where),
                        exp=_int(numbers, "e", 0, where),
                        out=_int(numbers, "c", 0, where),
                        se="se" in flags,
                        act=act,
                        stride=_int(numbers, "s", 0, where),
                    )
                )
        except SpecError as err:
            message = str(err)
            raise SpecError(message if message.startswith(where) else f"{where}: {message}") from None
    if not blocks:
        raise SpecError("spec string has no 'ir_...' block tokens")
    return ArchSpec(
        blocks=tuple(blocks),
        stem=stem,
        head=head,
        num_classes=num_classes,
        resolution=resolution,
        in_channels=in_channels,
    )
