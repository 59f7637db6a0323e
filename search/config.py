"""Typed configuration at the boundary: a Hydra node becomes a plain dataclass, or a clear error."""

from __future__ import annotations

from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from search_spaces.errors import ConfigError

T = TypeVar("T")


def typed(node: Any, schema: type[T], where: str) -> T:
    """Merge ``node`` onto the dataclass ``schema`` and return a ``schema`` instance.

    Unknown keys and wrong types raise :class:`ConfigError` naming ``where.key``."""
    if node is None:
        node = {}
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        message = str(err).splitlines()[0]
        allowed = ", ".join(schema.__dataclass_fields__)  # type: ignore[attr-defined]
        raise ConfigError(f"{where}.{key}: {message} (fields of {where}: {allowed})") from None
