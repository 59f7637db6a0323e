"""``mobilenas <command> [key=value ...]``: one Hydra app per command, one config per command.

Each command is a module ``search.commands.<name>`` with a ``run(cfg)`` function and a primary
config ``conf/<name>.yaml`` that composes the shared groups (space, data, latency, ...).
Bad input ends with a one-line ``error:`` message and exit status 2, a run that fails (diverged
training, a failed export check) with a one-line ``failed:`` message and exit status 1; never a
traceback.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig, open_dict

from search.config import typed
from search.package_data import conf_dir
from search_spaces.errors import MobilenasError, RunFailure, outcome
from search_spaces.limits import SpecLimits, set_limits
from search_spaces.serialize import atomic_write_text

CONF_DIR = conf_dir()

# name -> (module, one-line description). The order is the order of the help text.
COMMANDS: dict[str, tuple[str, str]] = {
    "show": ("search.commands.show", "show an architecture as a layer table with params and MAdds"),
    "measure": ("search.commands.measure", "measure the latency of an architecture"),
    "lut": ("search.commands.lut", "build, validate, import or list a latency lookup table"),
    "train": ("search.commands.train", "train an architecture on a data set"),
    "search": ("search.commands.search", "latency-constrained search with Optuna (the main job)"),
    "refine": ("search.commands.refine", "NetAdapt refinement of an architecture to a latency target"),
    "export": ("search.commands.export", "export an architecture or trained run for deployment"),
    "reproduce": ("search.commands.reproduce", "reproduce MobileNetV3-Large/Small figures and search"),
}


def usage() -> str:
    lines = ["usage: mobilenas <command> [key=value ...] [--help] [--cfg job]", "", "commands:"]
    lines += [f"  {name:<10} {description}" for name, (_, description) in COMMANDS.items()]
    lines += ["", "Each command takes Hydra overrides, e.g. 'mobilenas show arch=mobilenet_v3_small'.",
              "'mobilenas <command> --help' lists its config groups and defaults."]
    return "\n".join(lines)


def mask_saved_configs() -> None:
    """Rewrite the configs Hydra saved in the run directory (``.hydra/*.yaml``, written before the
    task starts) with the passwords of URLs in them masked, e.g. ``study.storage``'s."""
    from hydra.core.hydra_config import HydraConfig

    from search.study import mask_secrets

    hydra_cfg = HydraConfig.get()
    if not hydra_cfg.output_subdir:
        return
    saved = Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir
    for path in saved.glob("*.yaml"):
        text = path.read_text()
        masked = mask_secrets(text)
        if masked != text:
            atomic_write_text(path, masked)


def _guarded(run: Callable[[DictConfig], None]) -> Callable[[DictConfig], None]:
    def task(cfg: DictConfig) -> None:
        from search.study import mask_secrets

        try:
            mask_saved_configs()
            set_limits(typed(cfg.get("limits"), SpecLimits, "limits"))
            with open_dict(cfg):  # applied: the commands' own schemas do not list them
                cfg.pop("limits", None)
            run(cfg)
        except (MobilenasError, RunFailure) as err:
            prefix, status = outcome(err)
            print(f"{prefix}: {mask_secrets(str(err))}", file=sys.stderr)
            sys.exit(status)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return task


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


def composition_error(name: str, overrides: Sequence[str]) -> str | None:
    """Compose the command's config with ``overrides`` as Hydra will; a one-line message
    naming the bad key, group or option and what is allowed, or None when it composes."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            compose(config_name=name, overrides=list(overrides), return_hydra_config=True)
        return None
    except OverrideParseException as err:
        for override in overrides:
            problem = unbalanced(override)
            if problem:
                return f"{override}: {problem}"
        bad = re.search(r"override '([^']*)'", str(err))
        return f"{bad.group(1) if bad else 'an argument'!r} is not key=value (e.g. arch=mobilenet_v3_small)"
    except MissingConfigException as err:
        found = re.search(r"Could not find '([^/']+)/([^']+)'", str(err))
        if not found:
            return str(err).splitlines()[0]
        group, option = found.groups()
        options = sorted(f.stem for f in (CONF_DIR / group).glob("*.yaml"))
        return f"{group}={option}: no such option; allowed: {', '.join(options)}"
    except (HydraException, OmegaConfBaseException) as err:
        cause = err.__cause__
        key = getattr(cause, "full_key", None)
        if key:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
                base = compose(config_name=name)
            parent, _, leaf = str(key).rpartition(".")
            node = OmegaConf.select(base, parent) if parent else base
            keys = ", ".join(str(k) for k in node) if isinstance(node, DictConfig) else ""
            return f"{key}: unknown key for mobilenas {name}" + (f"; allowed: {keys}" if keys else "")
        group = re.search(r"Could not override '([^']+)'\. No match in the defaults list", str(err))
        if group:
            return (f"{group.group(1)}: mobilenas {name} has no such config group "
                    f"(see mobilenas {name} --help)")
        return str(err).splitlines()[0]


def main(argv: Sequence[str] | None = None) -> None:
    import hydra

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name = args[0]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    overrides = args[1:]
    if not any(arg.startswith("-") for arg in overrides):  # --help, --cfg, -m: Hydra's own
        problem = composition_error(name, overrides)
        if problem:
            from search.study import mask_secrets

            print(f"error: {mask_secrets(problem)}", file=sys.stderr)
            sys.exit(2)
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv = [f"mobilenas {name}", *args[1:]]
    app = hydra.main(version_base=None, config_path=str(CONF_DIR), config_name=name)(
        _guarded(module.run)
    )
    app()


if __name__ == "__main__":
    main()
