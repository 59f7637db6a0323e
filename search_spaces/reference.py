"""MobileNetV3-Large and -Small exactly as in the paper (Tables 1 and 2), with a width multiplier."""

from __future__ import annotations

from search_spaces.errors import SpecError
from search_spaces.spec import ArchSpec, BlockSpec, HeadSpec, StemSpec, make_divisible

# (kernel, exp, out, SE, NL, stride) rows, read straight from the paper's tables.
_LARGE = (
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
)
_SMALL = (
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
)
_TABLES = {
    "mobilenet_v3_large": (_LARGE, 960, 1280),
    "mobilenet_v3_small": (_SMALL, 576, 1024),
}
REFERENCES = tuple(_TABLES)

# What the paper reports at 224x224, 1000 classes, width 1.0 (MAdds and params in millions).
PAPER_FIGURES = {
    "mobilenet_v3_large": {"madds_m": 219.0, "params_m": 5.4, "top1": 75.2},
    "mobilenet_v3_small": {"madds_m": 56.0, "params_m": 2.5, "top1": 67.4},
}
# Exact parameter counts of the widely used public implementation (1000 classes, width 1.0).
REFERENCE_PARAMS = {"mobilenet_v3_large": 5_483_032, "mobilenet_v3_small": 2_542_856}


def reference_spec(
    name: str,
    *,
    width_mult: float = 1.0,
    num_classes: int = 1000,
    resolution: int = 224,
    dropout: float = 0.2,
) -> ArchSpec:
    """The reference spec ``name`` (one of :data:`REFERENCES`).

    The width multiplier scales the stem, every block's expansion and output widths and the
    last stage's 1x1 conv, rounded with ``make_divisible(v, 8)``; the hidden head width is
    scaled only when the multiplier exceeds 1 (as in the public implementations).
    """
    if name not in _TABLES:
        raise SpecError(f"reference {name!r} is unknown; allowed: {', '.join(REFERENCES)}")
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
        raise SpecError(f"width_mult must be a positive number, got {width_mult!r}")
    rows, last_conv, hidden = _TABLES[name]

    def scale(channels: int) -> int:
        return make_divisible(channels * width_mult)

    blocks = tuple(
        BlockSpec(kernel=k, exp=scale(e), out=scale(o), se=se, act=nl, stride=s)
        for k, e, o, se, nl, s in rows
    )
    return ArchSpec(
        blocks=blocks,
        stem=StemSpec(channels=scale(16), kernel=3, stride=2, act="HS"),
        head=HeadSpec(
            channels=scale(last_conv),
            hidden=make_divisible(hidden * max(1.0, width_mult)),
            act="HS",
            dropout=dropout,
        ),
        num_classes=num_classes,
        resolution=resolution,
    )
