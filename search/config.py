"""One-line messages for config errors, from the exception types of Hydra and OmegaConf and their
attributes (``full_key``, ``missing_cfg_file``, ``options``, ``override``), never their text."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

PAIRS = {"[": "]", "{": "}", "(": ")"}


def unbalanced(override: str) -> str | None:
    """What is unbalanced in ``override``'s value (brackets, braces, quotes), with the fix, or None."""
    key, _, value = override.partition("=")
    stack: list[str] = []
    quote = ""
    for char in value:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in PAIRS:
            stack.append(char)
        elif char in PAIRS.values():
            if not stack or PAIRS[stack[-1]] != char:
                opener = next(o for o, c in PAIRS.items() if c == char)
                return (f"unbalanced brackets ({char!r} without {opener!r}); "
                        f"e.g. {key}={opener}{value.rstrip(char)}{char}" if not stack else
                        f"unbalanced brackets ({stack[-1]!r} closed by {char!r})")
            stack.pop()
    if quote:
        return f"unbalanced quotes ({quote} opened, not closed); e.g. {key}={value}{quote}"
    if stack:
        closers = "".join(PAIRS[o] for o in reversed(stack))
        return (f"unbalanced brackets ({stack[-1]!r} opened, no {PAIRS[stack[-1]]!r}); "
                f"e.g. {key}={value}{closers}")
    return None


def first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def value_message(err: OmegaConfBaseException) -> str:
    """``key: what is wrong`` for an OmegaConf error about one key (a wrong type, a missing value)."""
    key = str(getattr(err, "full_key", "") or "")
    if isinstance(err, MissingMandatoryValue):
        return f"{key}: required; give it as {key}=<value>"
    reason = (str(getattr(err, "msg", "") or "").splitlines() or [first_line(err)])[0]
    return f"{key}: {reason}" if key else reason


def unknown_key(key: str, command: str | None, schema: type | None) -> str:
    """``key: unknown key for mobilenas <command>; allowed: <the keys beside it in the schema>``."""
    parent, _, _ = key.rpartition(".")
    allowed = ""
    if schema is not None:
        node = OmegaConf.structured(schema)
        node = OmegaConf.select(node, parent) if parent else node
        if isinstance(node, DictConfig):
            allowed = ", ".join(str(k) for k in node)
    where = f" for mobilenas {command}" if command else ""
    return f"{key}: unknown key{where}" + (f"; allowed: {allowed}" if allowed else "")


def override_key(override: str) -> str:
    """The key (or group) an override sets: ``+data@x=cifar10`` -> ``data``."""
    return override.partition("=")[0].lstrip("+~").partition("@")[0]


def composition_message(err: BaseException, command: str, overrides: Sequence[str], schema: type | None,
                        conf_dir: Path) -> str:
    """The one-line message for ``err``, raised while Hydra composed ``command``'s config from its
    primary config, its ``schema`` and ``overrides``."""
    if isinstance(err, OverrideParseException):
        problem = unbalanced(err.override)
        return f"{err.override}: {problem}" if problem else \
            f"{err.override!r} is not key=value (e.g. arch=mobilenet_v3_small)"
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options is not None:
        group, _, option = err.missing_cfg_file.rpartition("/")
        return f"{group}={option}: no such option; allowed: {', '.join(sorted(err.options))}"
    cause = err if isinstance(err, OmegaConfBaseException) else err.__cause__
    full_key = getattr(cause, "full_key", None)
    if isinstance(cause, ConfigKeyError | AttributeError) and full_key:
        return unknown_key(str(full_key), command, schema)
    if isinstance(cause, ValidationError | MissingMandatoryValue) and getattr(cause, "full_key", None):
        return value_message(cause)
    fields = set(getattr(schema, "__dataclass_fields__", ()))
    for override in overrides:
        key = override_key(override)
        if key and "." not in key and (conf_dir / key).is_dir() and key not in fields:
            return f"{key}: mobilenas {command} has no such config group (see mobilenas {command} --help)"
    return first_line(err)
