"""An architecture as the commands name it (``arch=``): a reference name with a width multiplier,
a spec file or a spec string, resolved to an :class:`ArchSpec`, and the label the commands print."""

from __future__ import annotations

from search_spaces import serialize
from search_spaces.errors import ConfigError
from search_spaces.reference import REFERENCES, reference_spec
from search_spaces.spec import ArchSpec


def resolve_arch(arch: str, *, width_mult: float = 1.0, num_classes: int | None = None,
                 resolution: int | None = None) -> ArchSpec:
    """A spec from a reference name (with width multiplier), a spec file or a spec string."""
    if arch in REFERENCES:
        spec = reference_spec(arch, width_mult=width_mult)
    elif width_mult != 1.0:
        raise ConfigError(f"width_mult applies to the references ({', '.join(REFERENCES)}) only")
    else:
        spec = serialize.load_spec(arch)
    return serialize.load_spec(str(spec), num_classes=num_classes, resolution=resolution) \
        if (num_classes or resolution) else spec


def arch_label(arch: str, *, width_mult: float = 1.0, num_classes: int | None = None,
               resolution: int | None = None) -> str:
    """``arch`` with the arguments that change it, e.g. ``mobilenet_v3_small (width_mult=0.75)``."""
    given = {"width_mult": None if width_mult == 1.0 else f"{width_mult:g}",
             "num_classes": num_classes, "resolution": resolution}
    shown = ", ".join(f"{name}={value}" for name, value in given.items() if value is not None)
    return f"{arch} ({shown})" if shown else arch
