"""Shared by the Fashion-MNIST benchmarks (``supernet_fidelity.py``, ``search_quality.py``): the data, one
stand-alone training budget, specs trained from scratch in worker processes with every result kept in a
JSON file (a rerun resumes where a killed one stopped), and a supernet trained through ``mobilenas
supernet``.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from evaluators.data import DataConfig, DatasetSplits, load_dataset
from evaluators.supernet.rundir import MANIFEST
from evaluators.training import TrainConfig, fit
from search_spaces import serialize
from search_spaces.builder import build_model
from search_spaces.config import SpaceConfig, build_space
from search_spaces.space import SearchSpace
from search_spaces.spec import ArchSpec

FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
RESOLUTION = 32


def fashion_data(root: Path, *, train_images: int, val_images: int | None) -> DataConfig:
    """Fashion-MNIST at 32x32: ``train_images`` training images, ``val_images`` held-out validation
    images (what supernet scores and proxies see; None: the whole split, 6,000); the 10,000-image test
    split judges stand-alone runs."""
    return DataConfig(name="fashion_mnist", root=str(root), resolution=RESOLUTION, test_size=0,
                      train_subset=train_images, val_subset=val_images)


def small_space(num_classes: int = 10) -> SearchSpace:
    """The V3-Small space at 32x32, as ``mobilenas supernet space=v3_small`` builds it."""
    return build_space(SpaceConfig(seed="mobilenet_v3_small"), num_classes=num_classes, resolution=RESOLUTION)


@dataclass(frozen=True)
class Budget:
    """One stand-alone training budget for every network (the fast recipe: RMSProp, cosine)."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.001

    def trainer(self, seed: int) -> TrainConfig:
        """The recipe; one evaluation, at the end (``eval_every`` beyond the budget)."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=seed,
                           progress=False, eval_every=2**31)

    def describe(self, data: DatasetSplits) -> str:
        return (f"{self.epochs} epochs of {len(data.train)} images, batch {self.batch_size}, RMSProp lr "
                f"{self.lr}, cosine; top-1 on the {len(data.test)}-image test split")


# data options a stand-alone result does not depend on: it trains on the train split and is judged on test
NOT_TRAINED_ON = ("val_subset",)


def _trained_on(settings: Any) -> Any:
    """``settings`` without the data options of :data:`NOT_TRAINED_ON` (what a resume must match)."""
    if not isinstance(settings, dict) or not isinstance(settings.get("data"), dict):
        return settings
    data = {k: v for k, v in settings["data"].items() if k not in NOT_TRAINED_ON}
    return {**settings, "data": data}


def key(spec: ArchSpec | str, seed: int) -> str:
    return f"{spec}#{seed}"


# --- worker processes ---------------------------------------------------------------------------
_SPLITS: DatasetSplits | None = None


def _init_worker(data: DataConfig, threads: int) -> None:
    global _SPLITS
    torch.set_num_threads(threads)
    _SPLITS = load_dataset(data)


def _train(spec_json: str, seed: int, budget: Budget) -> dict[str, Any]:
    assert _SPLITS is not None
    spec = serialize.from_dict(json.loads(spec_json))
    torch.manual_seed(seed)
    model = build_model(spec)
    result = fit(model, _SPLITS, budget.trainer(seed), eval_split="test")
    return {"spec": str(spec), "seed": seed, "top1": result.top1, "status": result.status,
            "seconds": result.seconds}


def run_logged(argv: list[str], log: str | Path) -> dict[str, Any]:
    """Run ``argv`` with its output appended to ``log``; SystemExit naming the log when it fails."""
    started = time.perf_counter()
    with open(log, "a") as out:
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"error: {' '.join(argv[2:5])} failed (exit status {code}); its output: {log}")
    return {"seconds": time.perf_counter() - started}


def supernet_command(run_dir: Path, data: DataConfig, *, epochs: int, batch_size: int, lr: float,
                     threads: int) -> list[str]:
    """``mobilenas supernet action=train`` on ``data`` into ``run_dir`` (resumed from its checkpoint)."""
    resume = "true" if (run_dir / "checkpoint.pt").is_file() else "false"
    return [sys.executable, "-m", "search", "supernet", "action=train", "space=v3_small",
            "data=fashion_mnist", f"data.root={data.root}", f"data.train_subset={data.train_subset}",
            f"data.val_subset={'null' if data.val_subset is None else data.val_subset}",
            f"trainer.epochs={epochs}",
            f"trainer.batch_size={batch_size}", f"trainer.lr={lr}", "trainer.progress=false",
            f"threads={threads}", f"out={run_dir}", f"resume={resume}"]


def supernet_ready(run_dir: Path) -> bool:
    return (run_dir / MANIFEST).is_file()


class StandaloneRuns:
    """Stand-alone training of (spec, seed) pairs in ``jobs`` processes of ``threads`` threads each; every
    finished run is written to ``results`` at once, and pairs already there are not trained again (when they
    were trained on the same data with the same budget; the validation subset may differ)."""

    def __init__(self, results: Path, data: DataConfig, budget: Budget, *, jobs: int, threads: int) -> None:
        self.path, self.data, self.budget, self.jobs, self.threads = results, data, budget, jobs, threads
        self.settings = {"budget": asdict(budget), "data": asdict(data)}
        saved = json.loads(results.read_text()) if results.is_file() else {"settings": self.settings}
        if _trained_on(saved.get("settings")) != _trained_on(self.settings):
            raise SystemExit(f"error: {results} holds runs of another budget or data set; use another --out")
        self.done: dict[str, dict[str, Any]] = saved.get("runs", {})

    def run(self, pairs: Iterable[tuple[ArchSpec, int]], *, commands: Iterable[tuple[str, list[str]]] = (),
            on_result: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
        """Train the pairs not yet done; ``commands`` (name, argv) run first in the same pool (their
        output to ``<results dir>/<name>.log``). Returns every result, old and new, by :func:`key`."""
        todo = [(spec, seed) for spec, seed in pairs if key(spec, seed) not in self.done]
        commands = list(commands)
        command_names = {name for name, _ in commands}
        if not todo and not commands:
            return self.done
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_init_worker,
                                 initargs=(self.data, self.threads)) as pool:
            futures: dict[Future[dict[str, Any]], str] = {}
            for name, argv in commands:
                futures[pool.submit(run_logged, argv, self.path.parent / f"{name}.log")] = name
            for spec, seed in todo:
                futures[pool.submit(_train, serialize.to_json(spec), seed, self.budget)] = key(spec, seed)
            try:
                for future in as_completed(futures):
                    name, result = futures[future], future.result()
                    if name not in command_names:
                        self.done[name] = result
                        serialize.atomic_write_text(self.path, json.dumps(
                            {"settings": self.settings, "runs": self.done}, indent=1))
                    if on_result is not None:
                        on_result(name, result)
            except BaseException:  # a failed job or Ctrl-C: drop the queued runs instead of training them
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return self.done
