"""Typed configuration of the accuracy proxy (the schema behind ``conf/proxy/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from evaluators.supernet.scoring import CALIB_BATCHES
from search_spaces.errors import ConfigError

KINDS = ("train", "naswot", "synflow", "supernet", "predictor")
SUPERNET_KINDS = ("supernet", "predictor")


@dataclass
class ProxyConfig:
    """``kind``: ``train`` (short proxy training, reports to the pruner), ``naswot`` or
    ``synflow`` (training-free ranking scores), ``supernet`` (the sub-network's top-1 on the trained
    supernet in ``supernet``, batch norm re-estimated) or ``predictor`` (an MLP fitted on the supernet
    scores of ``predictor_samples`` sampled sub-networks predicts it). Budget and resolution override
    the trainer's and the data's settings for the proxy only; the subsets narrow the data's (the
    smaller wins). ``conf/proxy/supernet.yaml`` and ``predictor.yaml`` set ``val_subset`` null: a supernet
    score costs little more on the whole validation split, and 500 images leave ~2 points of noise."""

    kind: str = "train"
    steps: int | None = 300  # proxy training budget in optimizer steps ...
    epochs: int | None = None  # ... or in epochs (when steps is null)
    train_subset: int | None = 2000  # images; null: data.train_subset (null there: the whole split)
    val_subset: int | None = 500  # images; null: data.val_subset (the default of proxy=supernet|predictor)
    resolution: int | None = None  # null: the data's resolution
    reports: int = 4  # validations reported to the pruner (at most); the last one never prunes
    batch_size: int = 64  # training-free scores: images per score
    supernet: str | None = None  # supernet/predictor: a supernet run directory ('mobilenas supernet')
    calib_batches: int = CALIB_BATCHES  # supernet/predictor: batches of 256 re-estimating batch norm per spec
    predictor_samples: int = 200  # predictor: sub-networks scored to fit it (80%) and check it (20%)
    predictor_confirm: float = 0.1  # predictor: specs predicted in the top 10% so far: scored on the supernet

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"proxy.kind: {self.kind!r} is unknown; allowed: {', '.join(KINDS)}")
        if self.kind == "train" and self.steps is None and self.epochs is None:
            raise ConfigError("proxy.steps / proxy.epochs: the train proxy needs a budget; set one of them")
        for key in ("steps", "epochs", "train_subset", "val_subset", "resolution"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"proxy.{key}: must be a positive number or null, got {value}")
        if self.reports < 1:
            raise ConfigError(f"proxy.reports: must be >= 1, got {self.reports}")
        if self.kind in SUPERNET_KINDS and not self.supernet:
            raise ConfigError(f"proxy.supernet: proxy={self.kind} needs a supernet run directory "
                              "(proxy.supernet=<dir> written by 'mobilenas supernet action=train')")
        if self.calib_batches < 1:
            raise ConfigError(f"proxy.calib_batches: must be >= 1, got {self.calib_batches}")
        if not 0.0 <= self.predictor_confirm <= 1.0:
            raise ConfigError("proxy.predictor_confirm: must be a fraction in [0, 1], "
                              f"got {self.predictor_confirm}")
        if self.predictor_samples < 10:
            raise ConfigError(f"proxy.predictor_samples: must be >= 10, got {self.predictor_samples}")
        if self.batch_size < 2:
            raise ConfigError(f"proxy.batch_size: must be >= 2, got {self.batch_size}")
