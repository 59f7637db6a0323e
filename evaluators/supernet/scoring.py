"""Scoring a sub-network of a supernet: re-estimate its batch-norm statistics, then validate it.

Shared weights carry batch-norm statistics of whatever ran last; a sub-network scored with them is
near chance (Once-for-All's users learned this the hard way). :func:`score_subnet` resets the
statistics, re-estimates them as plain averages over a fixed, seeded set of training batches, takes
the top-1 on the validation split, and puts every buffer back as it was. Scores are cached in memory
per supernet, keyed by the spec string, the weights' version and the scoring settings.
"""

from __future__ import annotations

import itertools
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from evaluators.data import BatchLoader, DatasetSplits
from evaluators.supernet.network import SuperNet
from evaluators.training.metrics import evaluate, recalibrate_batchnorm
from search_spaces.errors import ConfigError, DataError
from search_spaces.spec import ArchSpec

_CACHE_SIZE = 100_000  # scores kept per supernet
# Batch-norm re-estimation by default: 8 batches of 256 = 2,048 training images (Once-for-All uses ~2,000).
CALIB_BATCHES, CALIB_BATCH_SIZE = 8, 256
# per supernet: key -> (the data set scored on, its score); the reference tells a data set apart from a
# later one that reuses its id
_Entry = tuple[weakref.ref[DatasetSplits], "SubnetScore"]
_CACHES: weakref.WeakKeyDictionary[SuperNet, dict[tuple[Any, ...], _Entry]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class SubnetScore:
    """A sub-network's validation figures (fractions) after batch-norm re-estimation; ``seconds``:
    time the scoring took (re-estimation included); ``cached``: served from the cache."""

    spec: str
    top1: float
    top5: float
    loss: float
    count: int
    seconds: float
    cached: bool = False


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: must be an integer >= 1, got {value!r}")


@torch.no_grad()
def reestimate_batchnorm(net: SuperNet, spec: ArchSpec, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                         *, num_batches: int, amp_dtype: torch.dtype | None = None) -> None:
    """Make ``spec`` active, reset every batch-norm statistic and re-estimate the sub-network's as plain
    averages over the first ``num_batches`` of ``batches`` (on the net's device); :class:`DataError`
    when ``batches`` yields none."""
    _check_count("calib_batches", num_batches)
    net.set_active(spec)
    seen = 0

    def counted() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        nonlocal seen
        for images, labels in itertools.islice(batches, num_batches):
            seen += 1
            yield images, labels

    recalibrate_batchnorm(net, counted(), amp_dtype=amp_dtype)
    if seen == 0:
        raise DataError("the training split yields no batches to re-estimate batch-norm statistics with")


def calibration_batches(data: DatasetSplits, *, batch_size: int, seed: int,
                        device: str | torch.device = "cpu") -> BatchLoader:
    """Training batches in an order fixed by ``seed``, without augmentation (the same images for
    every sub-network scored with that seed)."""
    return BatchLoader(data.train, batch_size=batch_size, resolution=data.resolution, mean=data.mean,
                       std=data.std, channels=data.in_channels, shuffle=True, seed=seed, device=device)


def _norm_buffers(net: nn.Module) -> list[torch.Tensor]:
    return [buffer for module in net.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
            for buffer in module.buffers(recurse=False)]


def score_subnet(net: SuperNet, spec: ArchSpec, data: DatasetSplits, *, calib_batches: int = CALIB_BATCHES,
                 seed: int = 0, batch_size: int = CALIB_BATCH_SIZE, split: str = "val",
                 amp_dtype: torch.dtype | None = None) -> SubnetScore:
    """``spec``'s top-1 on ``split`` after re-estimating its batch-norm statistics on ``calib_batches``
    seeded training batches. The supernet's buffers, active sub-network and mode are restored after;
    the same spec, weights and settings are served from the cache."""
    _check_count("calib_batches", calib_batches)
    _check_count("batch_size", batch_size)
    device = next(net.parameters()).device
    key = (str(spec), net.weights_version(), id(data), split, calib_batches, seed, batch_size, str(device),
           str(amp_dtype))
    cache = _CACHES.setdefault(net, {})
    entry = cache.get(key)
    if entry is not None and entry[0]() is data:
        return replace(entry[1], cached=True)
    start = time.perf_counter()
    saved = [buffer.clone() for buffer in _norm_buffers(net)]
    active, training = net.active, net.training
    try:
        calibration = calibration_batches(data, batch_size=batch_size, seed=seed, device=device)
        reestimate_batchnorm(net, spec, calibration, num_batches=calib_batches, amp_dtype=amp_dtype)
        result = evaluate(net, data.loader(split, batch_size, device=device), amp_dtype=amp_dtype)
        if result.count == 0:
            raise DataError(f"the {split} split of {data.name} is empty: nothing to score a sub-network on")
    finally:
        with torch.no_grad():
            for buffer, value in zip(_norm_buffers(net), saved, strict=True):
                buffer.copy_(value)
        net.set_active(active)
        net.train(training)
    score = SubnetScore(str(spec), result.top1, result.top5, result.loss, result.count,
                        time.perf_counter() - start)
    if len(cache) >= _CACHE_SIZE:
        cache.pop(next(iter(cache)))
    cache[key] = (weakref.ref(data), score)
    return score
