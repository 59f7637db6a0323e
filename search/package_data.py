"""Where mobilenas' Hydra configs are, in a source checkout and in an installed wheel."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def conf_dir() -> Path:
    """The config directory: ``search/conf`` in an installed wheel (the checkout's top-level
    ``conf/`` shipped as package data, see pyproject.toml), that ``conf/`` in a checkout or an
    editable install. A real directory, as Hydra's ``config_path`` needs."""
    installed = resources.files("search") / "conf"
    if installed.is_dir():
        return Path(str(installed))
    checkout = Path(__file__).resolve().parents[1] / "conf"
    if not checkout.is_dir():
        raise FileNotFoundError(f"mobilenas' configs are in neither {installed} nor {checkout}: "
                                "reinstall mobilenas")
    return checkout
