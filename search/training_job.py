"""One training run as a library function: the job (spec, data and trainer options, fixed when the
run starts and reused on resume) and the training that writes the run dir's files.

The run directory gets ``spec.json``, ``run_config.json`` (data and trainer options),
``checkpoint.pt`` (atomic, for ``resume``), ``weights.safetensors`` (final weights; the EMA
weights when EMA is on), ``metrics.json``, ``metrics.csv`` and ``learning_curve.png``.
A run that diverges gets ``status: diverged`` in its metrics, no ``weights.safetensors`` and
raises :class:`TrainingDiverged`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from evaluators.cost import count_cost
from evaluators.data import DataConfig, DatasetSplits, load_dataset
from evaluators.training import CHECKPOINT, TrainConfig, TrainResult, evaluate, fit, save_weights
from evaluators.training.report import plot_learning_curve, write_metrics
from search.arch import resolve_arch
from search.config import typed
from search_spaces import serialize
from search_spaces.builder import build_model
from search_spaces.errors import ConfigError, TrainingDiverged
from search_spaces.spec import ArchSpec

log = logging.getLogger(__name__)
RUN_CONFIG = "run_config.json"


@dataclass
class TrainOptions:
    arch: str = "mobilenet_v3_small"
    width_mult: float = 1.0
    resume: Any = False  # false | true (continue the run in hydra.run.dir) | path of a run dir
    threads: int = 0  # CPU intra-op threads for torch; 0: torch's default


@dataclass(frozen=True)
class TrainJob:
    """Everything one training run needs, fixed when the run starts and reused on resume."""

    run_dir: Path
    spec: ArchSpec
    data: DataConfig
    trainer: TrainConfig
    resuming: bool


def _resume_dir(resume: Any, run_dir: Path) -> Path | None:
    if resume is None or resume is False or str(resume).lower() in ("false", "no", "0", ""):
        return None
    if resume is True or str(resume).lower() in ("true", "yes", "1"):
        return run_dir
    return Path(str(resume)).expanduser()


def prepare_job(cfg: DictConfig, run_dir: Path) -> TrainJob:
    """A new run in ``run_dir`` (Hydra's run dir), or the saved options of the run to resume
    (``resume=true``: the one in ``run_dir``)."""
    fields = {k: cfg.get(k) for k in TrainOptions.__dataclass_fields__ if k in cfg}
    options = typed(fields, TrainOptions, "train")
    if options.threads < 0:
        raise ConfigError(f"train.threads: must be >= 0 (0: torch's default), got {options.threads}")
    if options.threads > 0:
        torch.set_num_threads(options.threads)
    resume_dir = _resume_dir(options.resume, run_dir)
    if resume_dir is not None:
        saved = resume_dir / RUN_CONFIG
        if not saved.is_file() or not (resume_dir / "spec.json").is_file():
            raise ConfigError(f"train.resume: {resume_dir} is not a training run dir (no {RUN_CONFIG} or "
                              "spec.json); give the dir of a run started by 'mobilenas train'")
        try:
            stored = json.loads(saved.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{saved}: not valid JSON ({err})") from None
        trainer = typed(stored.get("trainer"), TrainConfig, "trainer")
        if "trainer" in cfg and "progress" in cfg.trainer:
            trainer = trainer.replace(progress=bool(cfg.trainer.progress))
        return TrainJob(resume_dir, serialize.load_spec_file(resume_dir / "spec.json"),
                        typed(stored.get("data"), DataConfig, "data"), trainer, True)
    data = typed(cfg.get("data"), DataConfig, "data")
    trainer = typed(cfg.get("trainer"), TrainConfig, "trainer")
    data.validate()
    trainer.validate()
    spec = resolve_arch(options.arch, width_mult=options.width_mult, resolution=data.resolution)
    return TrainJob(run_dir, spec, data, trainer, False)  # classes are set once the data is loaded


def run_training(job: TrainJob) -> dict[str, Any]:
    """Train ``job`` and write the run dir's files; returns the metrics written."""
    splits = load_dataset(job.data)
    spec = job.spec.replace(num_classes=splits.num_classes, in_channels=splits.in_channels,
                            resolution=splits.resolution)
    if job.resuming and spec != job.spec:
        raise ConfigError(f"{job.run_dir / 'spec.json'}: the saved spec does not fit the saved data options")
    job.run_dir.mkdir(parents=True, exist_ok=True)
    if not job.resuming:
        serialize.save_spec(spec, job.run_dir / "spec.json")
        serialize.atomic_write_text(job.run_dir / RUN_CONFIG, json.dumps(
            {"arch": str(spec), "data": asdict(job.data), "trainer": job.trainer.to_dict()}, indent=2) + "\n")
    elif not (job.run_dir / CHECKPOINT).is_file():
        log.warning("%s has no %s: training starts from scratch", job.run_dir, CHECKPOINT)
    torch.manual_seed(job.trainer.seed)
    model = build_model(spec)
    eval_split = "val" if len(splits.val) else "test"
    result = fit(model, splits, job.trainer, eval_split=eval_split, checkpoint_dir=job.run_dir,
                 resume=job.resuming)
    metrics = _metrics(spec, splits, job.trainer, result, eval_split)
    if result.ok:
        if len(splits.test) and eval_split != "test":
            test = evaluate(model, splits.loader("test", max(256, job.trainer.batch_size),
                                                 device=next(model.parameters()).device))
            metrics.update(top1=test.top1, top5=test.top5, loss=test.loss, split="test")
        save_weights(model, job.run_dir / "weights.safetensors", metadata={"spec": str(spec)})
    else:  # never leave weights beside a diverged run's metrics, not even an earlier run's
        (job.run_dir / "weights.safetensors").unlink(missing_ok=True)
    write_metrics(job.run_dir, metrics)
    if result.history:
        plot_learning_curve(result.history, job.run_dir / "learning_curve.png",
                            title=f"{splits.name} {splits.resolution}x{splits.resolution}")
    if not result.ok:
        raise TrainingDiverged(f"training diverged: {result.message}; see {job.run_dir / 'metrics.json'}; "
                               "lower trainer.lr or set trainer.clip_grad_norm")
    return metrics


def _metrics(spec: ArchSpec, splits: DatasetSplits, trainer: TrainConfig, result: TrainResult,
             eval_split: str) -> dict[str, Any]:
    """``top1``/``top5``/``loss`` are on ``split`` (test once training completed; the history's split
    until then); ``val_*`` are the history split's final figures."""
    cost = count_cost(spec)
    steps_per_epoch = len(splits.loader("train", trainer.batch_size, train=True))
    return {
        "status": result.status, "message": result.message,
        "top1": result.top1, "top5": result.top5, "loss": result.loss, "split": eval_split,
        "val_top1": result.top1, "val_top5": result.top5, "val_loss": result.loss,
        "history_split": eval_split,
        "arch": str(spec), "params": cost.params, "madds": cost.madds, "data": splits.summary(),
        "budget": {"steps": result.total_steps, "epochs": round(result.total_steps / steps_per_epoch, 4),
                   "batch_size": trainer.batch_size},
        "trainer": trainer.to_dict(), "ema": trainer.ema_decay > 0,
        "seconds": round(result.seconds, 3), "history": result.history,
    }
