"""One training run as a library function: the job (spec, data and trainer options, fixed when the
run starts and reused on resume) and the training that writes the run dir's files.

The run directory gets ``spec.json``, ``run_config.json`` (data and trainer options),
``checkpoint.pt`` (atomic, for ``resume``), ``weights.safetensors`` (final weights; the EMA
weights when EMA is on), ``metrics.json``, ``metrics.csv``, ``learning_curve.png`` and the run
record ``run.json`` (:mod:`search.run_record`). A run that diverges gets ``status: diverged`` in
its metrics, no ``weights.safetensors`` nor ``run.json`` and raises :class:`TrainingDiverged`.

Under ``torchrun --nproc_per_node=N -m search train ...`` every process trains its shard of each
global batch (:mod:`evaluators.training.distributed`); rank 0 alone writes the run dir's files,
into rank 0's run dir.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from evaluators.cost import count_cost
from evaluators.data import DataConfig, TrainingData, load_training_data
from evaluators.pretrained import load_into
from evaluators.training import CHECKPOINT, EvalResult, TrainConfig, TrainResult, evaluate, fit, save_weights
from evaluators.training.distributed import DistContext, context, shared_run_dir
from evaluators.training.report import plot_learning_curve, write_metrics
from search.arch import resolve_arch
from search.run_record import RUN_RECORD, RunRecord, write_run_record
from search.schema import from_record
from search.weights import layout_spec, read_weights
from search_spaces import serialize
from search_spaces.builder import build_model
from search_spaces.errors import ConfigError, TrainingDiverged
from search_spaces.limits import SpecLimits
from search_spaces.spec import ArchSpec

log = logging.getLogger(__name__)
RUN_CONFIG = "run_config.json"


@dataclass
class TrainOptions:
    """``mobilenas train``'s config (conf/train.yaml). A resumed run keeps its saved data and trainer
    options (only ``trainer.progress`` may change)."""

    limits: SpecLimits = field(default_factory=SpecLimits)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainConfig = field(default_factory=TrainConfig)
    arch: str = "mobilenet_v3_small"  # reference name, spec file (.json/.yaml/.txt) or spec string
    width_mult: float = 1.0  # width multiplier, for reference names only
    resume: Any = False  # false | true (continue the run in hydra.run.dir) | path of a run dir
    threads: int = 0  # CPU intra-op threads for torch; 0: torch's default (1 is fastest on a busy machine)
    # pretrained (issue 15): start from a torchvision / timm / mobilenas state_dict file (.pth/.safetensors);
    # its classifier is kept only when the data has as many classes
    weights: str | None = None

    def validate(self) -> None:
        if self.threads < 0:
            raise ConfigError(f"train.threads: must be >= 0 (0: torch's default), got {self.threads}")
        if resume_dir(self.resume, Path(".")) is None:  # a resumed run's options are the saved ones
            self.data.validate()
            self.trainer.validate()


@dataclass(frozen=True)
class TrainJob:
    """Everything one training run needs, fixed when the run starts and reused on resume."""

    run_dir: Path
    spec: ArchSpec
    data: DataConfig
    trainer: TrainConfig
    resuming: bool
    weights: Path | None = None  # pretrained initialization (a new run only)


def resume_dir(resume: Any, run_dir: Path) -> Path | None:
    """The run dir ``resume=`` names: None (false/empty: a new run), ``run_dir`` (true), or the path."""
    if resume is None or resume is False or str(resume).lower() in ("false", "no", "0", ""):
        return None
    if resume is True or str(resume).lower() in ("true", "yes", "1"):
        return run_dir
    return Path(str(resume)).expanduser()


MAX_RUN_CONFIG_BYTES = 2**20  # the options of a run: a few kilobytes


def read_run_config(run_dir: Path, *, key: str, kind: str, started_by: str) -> dict[str, Any]:
    """The options a ``kind`` run saved in ``run_dir`` (to resume it); ConfigError naming the config
    ``key`` when there are none, or they are not a JSON mapping."""
    saved = run_dir / RUN_CONFIG
    if not saved.is_file():
        raise ConfigError(f"{key}: {run_dir} is not a {kind} run dir (no {RUN_CONFIG}); give the dir of a "
                          f"run started by '{started_by}'")
    return serialize.read_json_object(saved, max_bytes=MAX_RUN_CONFIG_BYTES, what=f"{kind} run config",
                                      error=ConfigError)


def prepare_job(options: TrainOptions, run_dir: Path) -> TrainJob:
    """A new run in ``run_dir`` (Hydra's run dir), or the saved options of the run to resume
    (``resume=true``: the one in ``run_dir``)."""
    options.validate()
    if options.threads > 0:
        torch.set_num_threads(options.threads)
    run_dir = shared_run_dir(run_dir)
    resume_from = resume_dir(options.resume, run_dir)
    if resume_from is not None:
        saved = resume_from / RUN_CONFIG
        stored = read_run_config(resume_from, key="train.resume", kind="training",
                                 started_by="mobilenas train")
        if not (resume_from / "spec.json").is_file():
            raise ConfigError(f"train.resume: {resume_from} is not a training run dir (no spec.json); give "
                              "the dir of a run started by 'mobilenas train'")
        trainer = from_record(stored.get("trainer"), TrainConfig, f"{saved} trainer")
        trainer = trainer.replace(progress=options.trainer.progress)
        return TrainJob(resume_from, serialize.load_spec_file(resume_from / "spec.json"),
                        from_record(stored.get("data"), DataConfig, f"{saved} data"), trainer, True)
    data, trainer = options.data, options.trainer
    spec = resolve_arch(options.arch, width_mult=options.width_mult, resolution=data.resolution)
    if options.weights:  # the weights' source may lay a reference out otherwise (timm's _075 widths)
        spec = layout_spec(options.weights, spec, reference=options.arch, width_mult=options.width_mult)
        return TrainJob(run_dir, spec, data, trainer, False, Path(options.weights).expanduser())
    return TrainJob(run_dir, spec, data, trainer, False)  # classes are set once the data is loaded


def run_training(job: TrainJob) -> dict[str, Any]:
    """Train ``job`` and write the run dir's files (rank 0 only under torchrun); returns the metrics."""
    ctx = context()
    splits = load_training_data(job.data)
    spec = job.spec.replace(num_classes=splits.num_classes, in_channels=splits.in_channels,
                            resolution=splits.resolution)
    if job.resuming and spec != job.spec:
        raise ConfigError(f"{job.run_dir / 'spec.json'}: the saved spec does not fit the saved data options")
    job.run_dir.mkdir(parents=True, exist_ok=True)
    if not job.resuming:
        if ctx.is_main:
            serialize.save_spec(spec, job.run_dir / "spec.json")
            serialize.atomic_write_text(job.run_dir / RUN_CONFIG, json.dumps(
                {"arch": str(spec), "data": asdict(job.data), "trainer": job.trainer.to_dict(),
                 "weights": None if job.weights is None else str(job.weights)}, indent=2) + "\n")
    elif not (job.run_dir / CHECKPOINT).is_file():
        log.warning("%s has no %s: training starts from scratch", job.run_dir, CHECKPOINT)
    torch.manual_seed(job.trainer.seed)
    model = build_model(spec)
    if job.weights is not None and not job.resuming:
        loaded = read_weights(job.weights, spec, skip_classifier=True)
        load_into(model, loaded.converted)
        if ctx.is_main:
            print(loaded.summary())
    eval_split = "val" if len(splits.val) else "test"
    result = fit(model, splits, job.trainer, eval_split=eval_split, checkpoint_dir=job.run_dir,
                 resume=job.resuming)
    metrics = _metrics(spec, splits, job.trainer, result, eval_split)
    if result.ok and len(splits.test) and eval_split != "test":
        test = _test(model, splits, job.trainer.batch_size, ctx)
        metrics.update(top1=test.top1, top5=test.top5, loss=test.loss, split="test")
    if ctx.is_main:
        _write_files(job, model, spec, splits, result, metrics)
    ctx.barrier()
    if not result.ok:
        raise TrainingDiverged(f"training diverged: {result.message}; see {job.run_dir / 'metrics.json'}; "
                               "lower trainer.lr or set trainer.clip_grad_norm")
    return metrics


def _test(model: torch.nn.Module, splits: TrainingData, batch_size: int, ctx: DistContext) -> EvalResult:
    """The test split's evaluation (each rank its shard, reduced)."""
    device = next(model.parameters()).device
    loader = splits.loader("test", max(256, batch_size), device=device, shard=ctx.shard)
    return ctx.reduce_eval(evaluate(model, loader))


def _write_files(job: TrainJob, model: torch.nn.Module, spec: ArchSpec, splits: TrainingData,
                 result: TrainResult, metrics: dict[str, Any]) -> None:
    """Weights, metrics, run record and learning curve of a finished (or diverged) run."""
    if result.ok:
        save_weights(model, job.run_dir / "weights.safetensors", metadata={"spec": str(spec)})
    else:  # never leave weights beside a diverged run's metrics, not even an earlier run's
        (job.run_dir / "weights.safetensors").unlink(missing_ok=True)
    write_metrics(job.run_dir, metrics)
    if result.ok:
        write_run_record(job.run_dir, train_record(spec, metrics, initialized=job.weights))
    else:  # nor a record that would let an export take the run for a finished one
        (job.run_dir / RUN_RECORD).unlink(missing_ok=True)
    if result.history:
        plot_learning_curve(result.history, job.run_dir / "learning_curve.png",
                            title=f"{splits.name} {splits.resolution}x{splits.resolution}")


def train_record(spec: ArchSpec, metrics: dict[str, Any], *, initialized: Path | None = None) -> RunRecord:
    """The run record of a completed training run, from the ``metrics`` written to metrics.json."""
    accuracy = {k: float(metrics[k]) for k in ("top1", "top5", "val_top1", "val_top5")
                if metrics.get(k) is not None}
    provenance = {"method": "mobilenas train", "initialization": str(initialized or "random"),
                  "seconds": metrics["seconds"], "ema": metrics["ema"]}
    return RunRecord(kind="train", spec=spec, weights="weights.safetensors", accuracy=accuracy,
                     split=metrics["split"], data=metrics["data"], budget=metrics["budget"],
                     provenance=provenance)


def _metrics(spec: ArchSpec, splits: TrainingData, trainer: TrainConfig, result: TrainResult,
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
