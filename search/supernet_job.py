"""One supernet training run as a library function: the job (space, data, trainer and supernet options,
fixed when the run starts and reused on resume) and the training that writes the run dir's files.
``mobilenas supernet action=train`` and the search pipeline's supernet stage both run it.

The run dir gets ``run_config.json`` (the job's options: what ``resume`` reads), ``checkpoint.pt``, the
supernet itself (:func:`~evaluators.supernet.save_supernet`: weights, space, training record, data
description), ``metrics.json``, ``metrics.csv`` and one learning curve per sub-network size. A diverged
run gets ``status: diverged`` in its metrics, no supernet weights and raises :class:`TrainingDiverged`.
Under ``torchrun`` rank 0 alone writes the run dir's files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from evaluators.data import DataConfig, DatasetSplits, load_dataset
from evaluators.supernet import SuperNet, save_supernet
from evaluators.supernet.config import SupernetTrainConfig
from evaluators.supernet.rundir import MANIFEST, WEIGHTS
from evaluators.supernet.train import SIZES, size_history, train_supernet
from evaluators.training import TrainConfig, TrainResult
from evaluators.training.distributed import context
from evaluators.training.report import plot_learning_curve, write_metrics
from search.schema import from_record
from search.training_job import RUN_CONFIG, read_run_config
from search_spaces import serialize
from search_spaces.config import SpaceConfig, build_space
from search_spaces.errors import TrainingDiverged

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SupernetJob:
    """What one supernet training run is made of, fixed when it starts and reused on resume."""

    run_dir: Path
    space: SpaceConfig
    data: DataConfig
    trainer: TrainConfig
    settings: SupernetTrainConfig
    resuming: bool

    def options(self) -> dict[str, Any]:
        """The job's options as ``run_config.json`` holds them."""
        return {"space": asdict(self.space), "data": asdict(self.data), "trainer": self.trainer.to_dict(),
                "supernet": self.settings.to_dict()}


def saved_job(run_dir: Path, *, key: str, progress: bool) -> SupernetJob:
    """The job saved in ``run_dir``'s ``run_config.json``, to resume it (``trainer.progress`` as given);
    ConfigError naming the config ``key`` when there is none or it does not fit the options."""
    saved = run_dir / RUN_CONFIG
    stored = read_run_config(run_dir, key=key, kind="supernet", started_by="mobilenas supernet action=train")
    trainer = from_record(stored.get("trainer"), TrainConfig, f"{saved}: trainer").replace(progress=progress)
    return SupernetJob(run_dir, from_record(stored.get("space"), SpaceConfig, f"{saved}: space"),
                       from_record(stored.get("data"), DataConfig, f"{saved}: data"), trainer,
                       from_record(stored.get("supernet"), SupernetTrainConfig, f"{saved}: supernet"), True)


RETRY = "lower trainer.lr or set trainer.clip_grad_norm"  # what to change after a diverged run


def train(job: SupernetJob, *, retry: str = RETRY) -> dict[str, Any]:
    """Train the job's supernet, write the run dir's files and print the sizes' figures (rank 0 only
    under torchrun); :class:`TrainingDiverged` ending with ``retry`` (what to do next) when the training
    diverged."""
    ctx = context()
    splits = load_dataset(job.data)
    space = build_space(job.space, num_classes=splits.num_classes, resolution=splits.resolution,
                        in_channels=splits.in_channels)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    if not job.resuming and ctx.is_main:
        serialize.atomic_write_text(job.run_dir / RUN_CONFIG, json.dumps(job.options(), indent=2) + "\n")
    log.info("supernet run dir %s%s; space of %.3g architectures", job.run_dir,
             " (resuming)" if job.resuming else "", space.size())
    torch.manual_seed(job.trainer.seed)
    net = SuperNet(space)
    eval_split = "val" if len(splits.val) else "test"
    result = train_supernet(net, splits, job.trainer, job.settings, eval_split=eval_split,
                            checkpoint_dir=job.run_dir, resume=job.resuming)
    metrics = _metrics(job, splits, result, eval_split)
    if ctx.is_main:
        _write_files(job, net, splits, result, metrics)
    ctx.barrier()
    if not result.ok:
        metrics_file = job.run_dir / "metrics.json"
        raise TrainingDiverged(f"supernet training diverged: {result.message}; see {metrics_file}; {retry}")
    if ctx.is_main:
        _print_training(metrics, job.run_dir)
    return metrics


def _write_files(job: SupernetJob, net: SuperNet, splits: DatasetSplits, result: TrainResult,
                 metrics: dict[str, Any]) -> None:
    """The supernet (when completed), metrics and learning curves of a finished or diverged run."""
    if result.ok:
        save_supernet(job.run_dir, net.cpu(), record=_record(job, splits, metrics))
    else:  # never leave weights beside a diverged run's metrics, not even an earlier run's
        for name in (WEIGHTS, MANIFEST):
            (job.run_dir / name).unlink(missing_ok=True)
    write_metrics(job.run_dir, metrics)
    for size in SIZES if result.history else ():
        plot_learning_curve(size_history(result.history, size), job.run_dir / f"learning_curve_{size}.png",
                            title=f"supernet, {size} sub-network: {splits.name} {splits.resolution}x"
                                  f"{splits.resolution}")


def _metrics(job: SupernetJob, splits: DatasetSplits, result: TrainResult, eval_split: str) -> dict[str, Any]:
    last = result.history[-1] if result.history and result.ok else {}
    return {
        "status": result.status, "message": result.message, "split": eval_split,
        "sizes": {size: {key: last.get(f"{size}_{key}") for key in ("top1", "loss")} for size in SIZES},
        "top1": result.top1, "top5": result.top5, "loss": result.loss, "data": splits.summary(),
        "budget": {"steps": result.total_steps, "epochs": round(result.epochs, 4),
                   "batch_size": job.trainer.batch_size},
        "trainer": job.trainer.to_dict(), "supernet": job.settings.to_dict(),
        "seconds": round(result.seconds, 3), "history": result.history,
    }


def _record(job: SupernetJob, splits: DatasetSplits, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"data": asdict(job.data), "data_summary": splits.summary(), "space_config": asdict(job.space),
            "trainer": job.trainer.to_dict(), "supernet": job.settings.to_dict(),
            "status": metrics["status"], "sizes": metrics["sizes"], "budget": metrics["budget"],
            "seconds": metrics["seconds"]}


def _print_training(metrics: dict[str, Any], run_dir: Path) -> None:
    sizes = "  ".join(f"{size} {100 * figures['top1']:.2f}%" for size, figures in metrics["sizes"].items())
    print(f"supernet on {metrics['data']['name']}: {metrics['split']} top-1 {sizes}  "
          f"({metrics['budget']['steps']} steps in {metrics['seconds']:.1f}s, "
          f"chance {100 / metrics['data']['num_classes']:.1f}%)")
    print(f"run dir: {run_dir}")
