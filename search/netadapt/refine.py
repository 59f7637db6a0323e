"""NetAdapt with the project's data and trainer: what ``mobilenas refine`` and the search
pipeline call. Fine-tuning is :func:`evaluators.training.fit` at ``finetune_lr_scale`` x the
trainer's learning rate; accuracy is top-1 on the validation split (never the test split,
which only the final network is scored on). With ``netadapt.supernet`` the proposals are scored
on that supernet (:mod:`search.netadapt.supernet`) and only the final network is fine-tuned."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evaluators.data import DataConfig, DatasetSplits
from evaluators.training import TrainConfig, evaluate, fit, save_weights
from search.export import materialize
from search.netadapt.config import NetAdaptConfig
from search.netadapt.loop import Evaluate, FineTune, NetAdaptResult, netadapt
from search.netadapt.supernet import SupernetScorer
from search.run_record import RunRecord, data_facts, write_run_record
from search_spaces.builder import MobileNetV3Like, build_model
from search_spaces.errors import MobilenasError, TrainingDiverged
from search_spaces.serialize import atomic_write_text, save_spec
from search_spaces.spec import ArchSpec

logger = logging.getLogger(__name__)

SEED_TRAINING_DIR = "seed_training"


def top1(model: nn.Module, data: DatasetSplits, split: str = "val") -> float:
    """Top-1 accuracy of ``model`` on ``split``; NaN when its weights are not finite (diverged)."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        return math.nan
    device = next(model.parameters()).device
    return evaluate(model, data.loader(split, 256, device=device)).top1


def trainer_hooks(data: DatasetSplits, trainer: TrainConfig, *, lr_scale: float,
                  progress_above: int = 0) -> tuple[FineTune, Evaluate]:
    """``fine_tune(model, steps)`` and ``evaluate(model)`` for :func:`~search.netadapt.loop.netadapt`.

    Fine-tuning runs ``steps`` optimizer steps of ``trainer`` at ``lr_scale`` x its learning
    rate, without warm-up; its progress bar shows only for runs longer than ``progress_above``.
    """
    tuned = dataclasses.replace(trainer, lr=trainer.lr * lr_scale, warmup_epochs=0.0)
    diverged: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # scored NaN (ranked last), never by top-1

    def fine_tune(model: MobileNetV3Like, steps: int) -> MobileNetV3Like:
        result = fit(model, data, dataclasses.replace(tuned, steps=steps, eval_every=steps,
                                                      progress=trainer.progress and steps > progress_above))
        if not result.ok:
            logger.warning("fine-tuning %s: %s", model.spec, result.message)
            diverged.add(model)
        return model

    return fine_tune, lambda model: math.nan if model in diverged else top1(model, data)


def seed_model(spec: ArchSpec, data: DatasetSplits, trainer: TrainConfig, *,
               weights: Mapping[str, torch.Tensor] | None, pretrain_steps: int,
               run_dir: str | Path | None) -> MobileNetV3Like:
    """The seed network, in train mode: ``weights`` loaded strictly, or trained ``pretrain_steps``
    steps with ``trainer`` (checkpointed in ``run_dir/seed_training``, so a rerun does not train it
    again)."""
    if weights is not None:
        return materialize(spec, weights, where="seed weights").train()
    model = build_model(spec)
    if pretrain_steps == 0:
        logger.warning("refining an untrained seed (netadapt.pretrain_steps=0 and no weights)")
        return model
    checkpoint_dir = Path(run_dir) / SEED_TRAINING_DIR if run_dir is not None else None
    result = fit(model, data, dataclasses.replace(trainer, steps=pretrain_steps),
                 checkpoint_dir=checkpoint_dir, resume=True)
    if not result.ok:
        raise TrainingDiverged(f"training the seed diverged ({result.message}); lower trainer.lr")
    logger.info("seed trained %d steps: val top-1 %.4f", result.steps, result.top1)
    return model


def refine(seed_spec: ArchSpec, *, config: NetAdaptConfig, latency_ms: Callable[[ArchSpec], float],
           data: DatasetSplits, trainer: TrainConfig, run_dir: str | Path | None,
           weights: Mapping[str, torch.Tensor] | None = None, progress: bool = True,
           scorer: SupernetScorer | None = None, data_config: DataConfig | None = None) -> NetAdaptResult:
    """NetAdapt on ``seed_spec`` (its classes and resolution must be the data's) with the
    project's trainer and ``config`` (checked when it was built); ``run_dir`` holds checkpoints
    and ``history.json`` and is resumed. With ``config.supernet`` the proposals are scored on that
    supernet (``scorer``: one already loaded, e.g. the search's; else it is loaded, scoring on
    ``data``, which ``data_config`` must describe as the supernet's record does); the seed is then not
    trained and ``weights`` are not used."""
    if (seed_spec.num_classes, seed_spec.resolution) != (data.num_classes, data.resolution):
        raise MobilenasError(
            f"seed spec has {seed_spec.num_classes} classes at resolution {seed_spec.resolution}; "
            f"the data set {data.name!r} has {data.num_classes} at resolution {data.resolution}")
    model: MobileNetV3Like | None = None
    if config.supernet:
        if scorer is None:
            if data_config is None:
                raise ValueError("refine: data_config (the options data was loaded with) is needed to check "
                                 "netadapt.supernet's data")
            scorer = SupernetScorer.load(config.supernet, data, data_config)
        if weights is not None:
            logger.info("netadapt.supernet is set: the seed's weights are not used (the supernet's are)")
    else:
        scorer = None
        model = seed_model(seed_spec, data, trainer, weights=weights, pretrain_steps=config.pretrain_steps,
                           run_dir=run_dir)
    fine_tune, evaluate_fn = trainer_hooks(data, trainer, lr_scale=config.finetune_lr_scale,
                                           progress_above=config.short_steps)
    return netadapt(seed_spec, model, config, latency_ms=latency_ms, fine_tune=fine_tune,
                    evaluate=evaluate_fn, run_dir=run_dir, progress=progress, scorer=scorer)


def scorer_record(config: NetAdaptConfig) -> str:
    """How the proposals were scored, for the run record: ``fine_tune`` or ``supernet:<run dir>``."""
    return f"supernet:{config.supernet}" if config.supernet else "fine_tune"


def write_outputs(run_dir: str | Path, result: NetAdaptResult, *, data: DatasetSplits, trainer: TrainConfig,
                  config: NetAdaptConfig, protocol: Mapping[str, Any] | None = None,
                  seed_source: str = "") -> dict[str, Path]:
    """``winner.json``/``.txt``, ``seed.json``, ``weights.safetensors``, ``summary.json`` (latency
    with its protocol, accuracy, data, budget, provenance) and the run record ``run.json`` (what
    ``mobilenas export run=<dir>`` reads) in ``run_dir``, atomically; ``history.json`` is already there."""
    run_dir = Path(run_dir)
    seed_spec = result.seed_spec
    files = {
        "winner": save_spec(result.spec, run_dir / "winner.json"),
        "winner_txt": save_spec(result.spec, run_dir / "winner.txt"),
        "seed": save_spec(seed_spec, run_dir / "seed.json"),
        "weights": save_weights(result.model, run_dir / "weights.safetensors",
                                metadata={"mobilenas_spec": str(result.spec)}),
    }
    test_top1 = top1(result.model, data, "test")
    record = RunRecord(
        kind="refine", spec=result.spec, weights=files["weights"].name,
        accuracy={"val_top1": result.accuracy, "test_top1": test_top1}, latency_ms=result.latency_ms,
        protocol=dict(protocol) if protocol is not None else None,
        data=data_facts(data.summary()),
        budget={"pretrain_steps": config.pretrain_steps, "short_steps": config.short_steps,
                "final_steps": config.final_steps, "finetune_lr": trainer.lr * config.finetune_lr_scale,
                "trainer": trainer.to_dict()},
        provenance={"method": "NetAdapt (MobileNetV3 paper, section 4.2)",
                    "seed": seed_source or str(seed_spec), "seed_spec": str(seed_spec),
                    "metric": config.metric, "kinds": list(config.proposal_kinds),
                    "scorer": scorer_record(config), "iterations": result.iterations,
                    "status": result.status, "history": "history.json"})
    summary = {**result.summary(), "protocol": record.protocol, "test_top1": test_top1, "data": record.data,
               "budget": record.budget, "provenance": record.provenance}
    files["summary"] = atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    files["history"] = run_dir / "history.json"
    files["record"] = write_run_record(run_dir, record)
    return files
