"""NetAdapt's proposals scored on a trained supernet instead of fine-tuned one by one.

Each proposal is a sub-network of the supernet's space (:mod:`search.netadapt.subnets`), scored
by a :class:`~evaluators.accuracy.weight_sharing.SupernetEvaluator` (batch norm re-estimated on
fixed, seeded training batches, then top-1 on the validation split: the search's proxy data, whose
``proxy.val_subset`` is null for proxy=supernet|predictor, or all of ``refine``'s). At the end the refined
network's weights are extracted from the supernet (:func:`search.weights.extract_subnet`) for the
final fine-tune.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evaluators.accuracy.weight_sharing import SupernetEvaluator
from evaluators.data import DataConfig, DatasetSplits
from evaluators.supernet import SuperNet, load_supernet
from evaluators.supernet.rundir import MANIFEST
from search.schema import from_record
from search.weights import extract_subnet
from search_spaces.builder import MobileNetV3Like
from search_spaces.errors import ConfigError, DataError
from search_spaces.space import SearchSpace
from search_spaces.spec import ArchSpec

# data options that change no image a supernet score sees (augmentation, loading, subsets of the splits)
NOT_SCORED = ("augment", "crop_padding", "flip", "stream", "workers", "train_subset", "val_subset",
              "test_subset")
SYNTHETIC_ONLY = ("num_classes", "train_size", "seed")


def data_differences(trained: DataConfig, used: DataConfig) -> list[str]:
    """``data.<key>=<used> (supernet: <trained>)`` for each option that makes the splits' images differ."""
    ignored = NOT_SCORED + (() if trained.name == used.name == "synthetic" else SYNTHETIC_ONLY)
    before, now = asdict(trained), asdict(used)
    return [f"data.{key}={now[key]!r} (supernet: {before[key]!r})" for key in now
            if key not in ignored and now[key] != before[key]]


@dataclass(frozen=True)
class SupernetScorer:
    """Scores specs of the evaluator's supernet space with it (``source``: the supernet run dir, for
    records); a search's supernet/predictor proxy can be handed over as it is."""

    evaluator: SupernetEvaluator
    source: str

    @classmethod
    def load(cls, run_dir: str, data: DatasetSplits, data_config: DataConfig) -> SupernetScorer:
        """The supernet saved in ``run_dir`` (``mobilenas supernet action=train``), scoring on ``data``
        (loaded from ``data_config``); :class:`ConfigError` naming the data options that differ from
        those the supernet was trained on."""
        try:
            net, record = load_supernet(run_dir)
        except DataError as err:
            raise DataError(f"netadapt.supernet: {err}") from None
        trained = from_record(record.get("data"), DataConfig, f"{Path(run_dir) / MANIFEST}: data")
        differ = data_differences(trained, data_config)
        if differ:
            raise ConfigError(f"netadapt.supernet: {run_dir} was trained on other data "
                              f"({', '.join(differ)}); refine on the data the supernet was trained on")
        return cls(SupernetEvaluator(net, data), str(run_dir))

    @property
    def net(self) -> SuperNet:
        return self.evaluator.net

    @property
    def space(self) -> SearchSpace:
        return self.net.space

    def check(self, spec: ArchSpec) -> None:
        """:class:`ConfigError` when ``spec`` (the seed) is not an architecture of the supernet's space."""
        if not self.space.contains(spec):
            raise ConfigError(f"netadapt.supernet: the seed {spec} is not an architecture of the space of "
                              f"{self.source} (seed {self.space.seed}); refine a spec of that space, e.g. "
                              "the winner of a search with proxy.supernet set to it")

    def score(self, spec: ArchSpec) -> float:
        """``spec``'s supernet score (also under proxy=predictor, whose own evaluate predicts it)."""
        return SupernetEvaluator.evaluate(self.evaluator, spec).accuracy

    def extract(self, spec: ArchSpec) -> MobileNetV3Like:
        """``spec``'s network with the supernet's weights and re-estimated statistics, in train mode."""
        ev = self.evaluator
        return extract_subnet(ev.net, spec, ev.data, calib_batches=ev.calib_batches, batch_size=ev.batch_size,
                              seed=ev.seed).train()

    def describe(self) -> dict[str, Any]:
        """What a checkpoint and the run record say about the scorer (a resume must match it: scores on
        another number of validation images are not comparable)."""
        ev = self.evaluator
        return {"supernet": self.source, "calib_batches": ev.calib_batches,
                "batch_size": ev.batch_size, "seed": ev.seed, "val_images": len(ev.data.val)}
