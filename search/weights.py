"""``weights=<file>`` of the commands: a torchvision, timm or mobilenas state_dict read safely,
checked against the architecture and mapped onto our module names (see :mod:`evaluators.pretrained`);
or ``weights=<supernet run dir>``: the architecture's sub-network weights, extracted from the supernet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from evaluators.data import DataConfig, DatasetSplits, load_dataset
from evaluators.pretrained import Converted, convert, detect_source, load_into, read_state_dict, source_spec
from evaluators.supernet import SuperNet, load_supernet, reestimate_batchnorm
from evaluators.supernet.rundir import MANIFEST
from evaluators.supernet.scoring import CALIB_BATCH_SIZE, CALIB_BATCHES, calibration_batches
from search.schema import from_record
from search_spaces.builder import MobileNetV3Like, build_model
from search_spaces.errors import DataError
from search_spaces.spec import ArchSpec


@dataclass(frozen=True)
class Weights:
    """A weights file mapped onto ``spec`` (the source's layout of the asked architecture)."""

    path: Path
    spec: ArchSpec
    converted: Converted
    note: str = ""  # how and why ``spec`` differs from the asked one

    @property
    def source(self) -> str:
        return self.converted.source

    def summary(self) -> str:
        """One line: the file, its detected source and that every tensor mapped."""
        kept = [] if self.converted.state.keys() >= {"head.classifier.weight"} else [
            "classifier not loaded: new classes"]
        extra = "; ".join([*kept, *([self.note] if self.note else [])])
        return (f"weights: {self.path}: {self.source} state_dict, all {self.converted.mapped} tensors mapped"
                + (f" ({extra})" if extra else ""))

    def build(self) -> MobileNetV3Like:
        """A network of ``spec`` with these weights."""
        model = build_model(self.spec)
        load_into(model, self.converted)
        return model


def read_weights(path: str | Path, spec: ArchSpec, *, reference: str | None = None, width_mult: float = 1.0,
                 skip_classifier: bool = False) -> Weights:
    """Read ``path`` and map it onto ``spec`` (for a reference name, in the source's own layout:
    timm's ``_075`` widths differ from the paper's multiplier). DataError when it does not fit."""
    path = Path(path).expanduser()
    if is_supernet_dir(path):
        converted = convert(supernet_weights(path, spec), spec, where=f"weights ({path})",
                            skip_classifier=skip_classifier)
        return Weights(path, spec, converted, "the sub-network's weights, extracted from the supernet")
    state = read_state_dict(path)
    source = detect_source(list(state))
    fitted = source_spec(source, spec, reference, width_mult)
    note = "" if fitted == spec else f"{source}'s own widths for {reference} x{width_mult:g}: {fitted}"
    return Weights(path, fitted, convert(state, fitted, where=f"weights ({path})",
                                         skip_classifier=skip_classifier), note)


def layout_spec(path: str | Path, spec: ArchSpec, *, reference: str | None = None,
                width_mult: float = 1.0) -> ArchSpec:
    """``spec`` as the weights' source lays out ``reference`` (timm's ``_075`` widths); ``spec`` otherwise."""
    path = Path(path).expanduser()
    if is_supernet_dir(path):
        return spec
    source = detect_source(list(read_state_dict(path)))
    return source_spec(source, spec, reference, width_mult)


def is_supernet_dir(path: Path) -> bool:
    """Whether ``path`` is a directory holding a supernet run's manifest."""
    return path.is_dir() and (path / MANIFEST).is_file()


def supernet_weights(run_dir: Path, spec: ArchSpec) -> dict[str, torch.Tensor]:
    """The state_dict of ``spec``'s sub-network of the supernet in ``run_dir``, its batch-norm statistics
    re-estimated on seeded batches of the supernet's training data (shared weights carry some other
    sub-network's); DataError when ``spec`` is not an architecture of the supernet's space."""
    net, record = load_supernet(run_dir)
    if not net.space.contains(spec):
        raise DataError(f"weights ({run_dir}): {spec} is not an architecture of this supernet's space "
                        f"(seed {net.space.seed}); search or name an architecture of that space")
    splits = load_dataset(from_record(record.get("data"), DataConfig, f"{run_dir / MANIFEST}: data"))
    return extract_subnet(net, spec, splits).state_dict()


def extract_subnet(net: SuperNet, spec: ArchSpec, splits: DatasetSplits, *,
                   calib_batches: int = CALIB_BATCHES, batch_size: int = CALIB_BATCH_SIZE,
                   seed: int = 0) -> MobileNetV3Like:
    """``spec``'s sub-network of ``net`` as an ordinary network (eval mode, on the net's device), its
    batch-norm statistics re-estimated on ``calib_batches`` training batches of ``splits`` drawn with
    ``seed`` (the batches :func:`~evaluators.supernet.score_subnet` uses: the same statistics). The
    supernet's own statistics are left as ``spec``'s."""
    device = next(net.parameters()).device
    batches = calibration_batches(splits, batch_size=batch_size, seed=seed, device=device)
    reestimate_batchnorm(net, spec, batches, num_batches=calib_batches)
    return net.eval().extract(spec)
