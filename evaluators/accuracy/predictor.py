"""An accuracy predictor: a small MLP on the one-hot encoding of a spec's choices.

Trained on (spec, score) pairs, e.g. sub-networks scored on a supernet, it scores a spec in
microseconds; Once-for-All's predictor is the same shape (3 layers of 400 units on a one-hot
encoding of each layer's choices). Held-out RMSE and rank correlations say how far to trust it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr
from torch import nn

from search_spaces.encoding import SpecEncoding
from search_spaces.space import SearchSpace
from search_spaces.spec import ArchSpec


@dataclass(frozen=True)
class PredictorReport:
    """Agreement of predictions with scores on specs the predictor was not trained on."""

    count: int
    rmse: float
    spearman: float
    kendall: float

    def __str__(self) -> str:
        return (f"{self.count} held-out specs: RMSE {self.rmse:.4f}, Spearman {self.spearman:+.3f}, "
                f"Kendall tau {self.kendall:+.3f}")


@dataclass(frozen=True)
class PredictorSettings:
    """MLP width and depth (hidden layers) and its training: full-batch Adam for ``epochs``."""

    hidden: int = 400
    layers: int = 3
    epochs: int = 500
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


def _mlp(inputs: int, settings: PredictorSettings) -> nn.Sequential:
    modules: list[nn.Module] = []
    width = inputs
    for _ in range(settings.layers):
        modules += [nn.Linear(width, settings.hidden), nn.ReLU()]
        width = settings.hidden
    modules.append(nn.Linear(width, 1))
    return nn.Sequential(*modules)


class AccuracyPredictor:
    """Predicts a spec's score from its encoding; :meth:`fit` first."""

    def __init__(self, space: SearchSpace, settings: PredictorSettings | None = None) -> None:
        self.encoding = SpecEncoding(space)
        self.settings = settings or PredictorSettings()
        self.mean, self.std = 0.0, 1.0
        self.net: nn.Sequential | None = None

    def fit(self, specs: Sequence[ArchSpec], scores: Sequence[float]) -> AccuracyPredictor:
        """Train on ``specs`` and their ``scores`` (deterministic for the settings' seed)."""
        if len(specs) != len(scores) or len(specs) < 2:
            raise ValueError(f"fit needs at least 2 specs with one score each, got {len(specs)} "
                             f"specs and {len(scores)} scores")
        targets = np.asarray(scores, dtype=np.float64)
        if not np.all(np.isfinite(targets)):
            raise ValueError("fit: every score must be finite")
        self.mean, self.std = float(targets.mean()), float(targets.std()) or 1.0
        x = torch.from_numpy(self.encoding.encode_many(specs))
        y = torch.from_numpy(((targets - self.mean) / self.std).astype(np.float32)).unsqueeze(1)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.settings.seed)
        try:
            net = _mlp(self.encoding.size, self.settings)
        finally:
            torch.random.set_rng_state(generator_state)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.settings.lr,
                                     weight_decay=self.settings.weight_decay)
        net.train()
        for _ in range(self.settings.epochs):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(net(x), y)
            loss.backward()
            optimizer.step()
        self.net = net.eval()
        return self

    @torch.no_grad()
    def predict(self, specs: Sequence[ArchSpec]) -> np.ndarray:
        """Predicted scores of ``specs``, on the scale of the training scores."""
        if self.net is None:
            raise RuntimeError("predict before fit: train the predictor on scored specs first")
        x = torch.from_numpy(self.encoding.encode_many(specs))
        return self.net(x).squeeze(1).double().numpy() * self.std + self.mean

    def report(self, specs: Sequence[ArchSpec], scores: Sequence[float]) -> PredictorReport:
        """RMSE, Spearman and Kendall tau of the predictions against ``scores``."""
        predicted = self.predict(specs)
        actual = np.asarray(scores, dtype=np.float64)
        rmse = float(math.sqrt(np.mean((predicted - actual) ** 2)))
        return PredictorReport(len(actual), rmse, float(spearmanr(predicted, actual)[0]),
                               float(kendalltau(predicted, actual)[0]))
