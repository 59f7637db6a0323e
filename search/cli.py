"""``mobilenas <command> [key=value ...]``: one Hydra app per command, one config per command.

Each command is a module ``search.commands.<name>`` with a ``run(options)`` function, its config
dataclass ``CONFIG`` (registered as ``<name>_schema``, see :mod:`search.schema`) and a primary config
``conf/<name>.yaml`` that composes the shared groups (space, data, latency, ...) onto it.
Bad input ends with a one-line ``error:`` message and exit status 2 (an unknown key, option or command,
a value of the wrong type, a failed check), a run that fails (diverged training, a failed export check)
with a one-line ``failed:`` message and exit status 1; a bug with its traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from search.config import composition_message
from search.package_data import conf_dir
from search.schema import register, to_options
from search_spaces.errors import MobilenasError, RunFailure, outcome
from search_spaces.limits import set_limits
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
    "supernet": ("search.commands.supernet", "train a weight-sharing supernet or score its sub-networks"),
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


def _apply(name: str, run: Callable[[Any], None], cfg: DictConfig) -> None:
    """``run`` on the typed config (validated), with its spec limits active."""
    options = to_options(cfg, name)
    set_limits(options.limits)
    run(options)


def _guarded(name: str, run: Callable[[Any], None], started: list[bool]) -> Callable[[DictConfig], None]:
    def task(cfg: DictConfig) -> None:
        from search.study import mask_secrets

        started.append(True)  # composed: what fails from here on is the command's
        try:
            mask_saved_configs()
            _apply(name, run, cfg)
        except (MobilenasError, RunFailure) as err:
            prefix, status = outcome(err)
            print(f"{prefix}: {mask_secrets(str(err))}", file=sys.stderr)
            sys.exit(status)
        except OSError as err:  # a path the user gave that cannot be read or written (missing, no rights)
            print(f"error: {mask_secrets(str(err))}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return task


@contextmanager
def hydra_raises() -> Iterator[bool]:
    """Hydra re-raises what fails (HYDRA_FULL_ERROR=1) instead of printing it; yields whether the user
    asked for that."""
    asked = bool(os.environ.get("HYDRA_FULL_ERROR"))
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield asked
    finally:
        if not asked:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def fail(message: str, status: int) -> None:
    from search.study import mask_secrets

    print(f"error: {mask_secrets(message)}", file=sys.stderr)
    sys.exit(status)


def main(argv: Sequence[str] | None = None) -> None:
    import hydra

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name = args[0]
    if name not in COMMANDS:
        fail(f"unknown command {name!r}; allowed: {', '.join(COMMANDS)}", 2)
    module = importlib.import_module(COMMANDS[name][0])
    schema = module.CONFIG  # every command's config dataclass
    register(name, schema)
    started: list[bool] = []
    sys.argv = [f"mobilenas {name}", *args[1:]]
    app = hydra.main(version_base=None, config_path=str(CONF_DIR), config_name=name)(
        _guarded(name, module.run, started)
    )
    with hydra_raises() as asked:
        try:
            app()
        except Exception as err:
            if not started and isinstance(err, HydraException | OmegaConfBaseException):  # composing
                overrides = [arg for arg in args[1:] if not arg.startswith("-")]
                fail(composition_message(err, name, overrides, schema, CONF_DIR), 2)
            if asked:
                raise
            traceback.print_exc()  # a bug
            sys.exit(1)


if __name__ == "__main__":
    main()
