"""``accuracy_evaluator``: the one evaluator a search builds (data loaded once) and calls per trial."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from evaluators.accuracy.base import SpecEvaluator
from evaluators.accuracy.config import SUPERNET_KINDS, ProxyConfig
from evaluators.accuracy.proxy import ProxyTrainEvaluator
from evaluators.accuracy.weight_sharing import PredictorEvaluator, SupernetEvaluator
from evaluators.accuracy.zero_cost import NaswotEvaluator, SynflowEvaluator
from evaluators.data import DataConfig, DatasetSplits, load_dataset
from evaluators.supernet import load_supernet
from evaluators.training import TrainConfig


def proxy_data_config(proxy: ProxyConfig, data: DataConfig) -> DataConfig:
    """The data config with the proxy's subsets and resolution applied. A subset set on both
    sides takes the smaller: ``data.train_subset`` / ``data.val_subset`` cap what any job
    (search proxies, NetAdapt after the search) trains and validates on."""
    changes: dict[str, Any] = {}
    for key in ("train_subset", "val_subset"):
        sizes = [n for n in (getattr(data, key), getattr(proxy, key)) if n is not None]
        if sizes:
            changes[key] = min(sizes)
    if proxy.resolution is not None:
        changes["resolution"] = proxy.resolution
    return replace(data, **changes)


def accuracy_evaluator(proxy: ProxyConfig, data: DataConfig, trainer: TrainConfig, *, seed: int = 0,
                       splits: DatasetSplits | None = None) -> SpecEvaluator | SupernetEvaluator:
    """An evaluator with ``name``, ``unit`` and ``evaluate(spec, report=None) -> AccuracyResult``.

    The data is loaded here, once (pass ``splits`` to reuse data already loaded with the proxy's
    subsets). ``seed`` fixes the initialization and the training stream of every candidate."""
    proxy.validate()
    trainer.validate()
    splits = splits if splits is not None else load_dataset(proxy_data_config(proxy, data))
    if proxy.kind == "naswot":
        return NaswotEvaluator(splits, batch_size=proxy.batch_size, seed=seed)
    if proxy.kind == "synflow":
        return SynflowEvaluator(splits, batch_size=proxy.batch_size, seed=seed)
    if proxy.kind in SUPERNET_KINDS:
        net, _ = load_supernet(str(proxy.supernet))
        if proxy.kind == "predictor":
            return PredictorEvaluator(net, splits, samples=proxy.predictor_samples, seed=seed,
                                      confirm=proxy.predictor_confirm, calib_batches=proxy.calib_batches)
        return SupernetEvaluator(net, splits, calib_batches=proxy.calib_batches, seed=seed)
    budget = {"steps": proxy.steps} if proxy.steps is not None else {"steps": None, "epochs": proxy.epochs}
    return ProxyTrainEvaluator(splits, trainer.replace(**budget), reports=proxy.reports, seed=seed)
