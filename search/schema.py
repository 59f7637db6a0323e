"""The schema of each command's config, registered in Hydra's ConfigStore.

A command module ``search.commands.<name>`` names its config dataclass ``CONFIG``; it is stored as
``<name>_schema``, the first entry of ``conf/<name>.yaml``'s defaults list, so Hydra composes onto the
dataclass: its fields are the keys, its defaults the values, and the YAML files (the primary config and
the group options: ``conf/<group>/<option>.yaml``) carry only what differs. Hydra then refuses unknown
keys, options and mistyped values while composing, and :func:`to_options` turns the composed config into
the dataclass instance and validates it: the one way a config reaches the library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from search.config import unknown_key, value_message
from search.package_data import conf_dir
from search_spaces.errors import ConfigError

T = TypeVar("T")


def schema_name(command: str) -> str:
    return f"{command}_schema"


def schema_node(schema: type) -> DictConfig:
    """``schema`` as a config node whose frozen parts (e.g. ``limits``, a frozen :class:`SpecLimits`) still
    take overrides; :func:`to_options` builds them frozen."""
    node = OmegaConf.structured(schema)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig) and OmegaConf.is_readonly(child):
            OmegaConf.set_readonly(child, False)
    return node


def register(command: str, schema: type) -> None:
    """Store ``schema`` as ``<command>_schema`` in Hydra's ConfigStore."""
    ConfigStore.instance().store(name=schema_name(command), node=schema_node(schema))


def added_key(node: DictConfig, prefix: str = "") -> str | None:
    """The first key of ``node`` that its dataclass does not declare (added with ``+key=value``, which
    :func:`OmegaConf.to_object` would drop without a word), or None."""
    declared = getattr(OmegaConf.get_type(node), "__dataclass_fields__", None)
    for key in node.keys():
        if declared is not None and key not in declared:
            return f"{prefix}{key!s}"
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            found = added_key(child, f"{prefix}{key!s}.")
            if found:
                return found
    return None


def to_options(cfg: Any, command: str | None = None) -> Any:
    """The dataclass instance of ``command``'s composed config, validated (its ``validate()``)."""
    added = added_key(cfg) if isinstance(cfg, DictConfig) else None
    if added:
        raise ConfigError(unknown_key(added, command, OmegaConf.get_type(cfg)))
    try:
        options = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(value_message(err)) from None
    validate = getattr(options, "validate", None)
    if callable(validate):
        validate()
    return options


def compose_options(command: str, overrides: Sequence[str] = ()) -> Any:
    """``command``'s typed config with ``overrides``, as ``mobilenas <command>`` gets it (for scripts
    and tests; the CLI composes through ``hydra.main``)."""
    import importlib

    from hydra import compose, initialize_config_dir

    register(command, importlib.import_module(f"search.commands.{command}").CONFIG)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return to_options(compose(config_name=command, overrides=list(overrides)), command)


def from_record(values: Any, schema: type[T], where: str) -> T:
    """``values`` saved by an earlier run (e.g. the trainer options in ``run_config.json``) checked
    against ``schema``: unknown keys and wrong types are a ConfigError naming ``where``."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values if values is not None else {})
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: {value_message(err)}") from None


def preset(group: str, name: str, schema: type[T], where: str) -> T:
    """The group option ``conf/<group>/<name>.yaml`` applied to ``schema``'s defaults (e.g. a trainer
    preset chosen by name in another key); a ConfigError naming ``where`` and the options when there is
    no such option."""
    options = conf_dir() / group
    path = options / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in options.glob("*.yaml")))
        raise ConfigError(f"{where}: {name!r} is not a {group} preset; choose one of {names}")
    return from_record(OmegaConf.load(path), schema, str(path))
