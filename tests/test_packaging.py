"""A non-editable install works: the wheel carries the Hydra configs and its ``mobilenas`` runs from it.

The wheel is built offline from a copy of the checkout (no build files land in the checkout) and
installed with ``pip --target``; the dependencies come from the running environment, whose ``.pth``
files are skipped (``python -S``) so that its editable install cannot lend the checkout's modules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "search_spaces", "evaluators")
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def pip(*args: str | Path) -> None:
    result = subprocess.run([*PIP, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("conf", *PACKAGES):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist, source)
    (built,) = dist.glob("mobilenas-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip("install", "--no-deps", "--no-index", "-q", "--target", target, wheel)
    return target


def test_the_wheel_ships_every_config_and_package(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = sorted(p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml"))
    assert "show.yaml" in configs and "trainer/fast.yaml" in configs
    assert [c for c in configs if f"search/conf/{c}" not in names] == []
    inits = (p for name in PACKAGES for p in (ROOT / name).rglob("__init__.py"))
    packages = [p.relative_to(ROOT).as_posix() for p in inits]
    assert [p for p in packages if p not in names] == []


def test_mobilenas_show_runs_from_the_installed_wheel(site: Path, tmp_path: Path):
    dependencies = dict.fromkeys(sysconfig.get_path(name) for name in ("purelib", "platlib"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *dependencies])}
    python = [sys.executable, "-S"]  # no site-packages .pth files: no editable finder
    where = subprocess.run(
        [*python, "-c", "import search.package_data as p; print(p.__file__); print(p.conf_dir())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    module, conf = (Path(line) for line in where.stdout.splitlines())
    assert module.is_relative_to(site) and conf == site / "search" / "conf"

    command = [*python, str(site / "bin" / "mobilenas"), "show", "arch=mobilenet_v3_small"]
    shown = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "params 2,542,856" in shown.stdout and "bneck 5x5       576       96    yes  HS" in shown.stdout
