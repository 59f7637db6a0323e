"""``mobilenas reproduce action=evaluate``: published (or trained) weights of a reference network on an
ImageNet-style validation folder with the standard eval transform, next to the paper's and the
weights' source's figures."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evaluators.data import DataConfig
from evaluators.data.imagenet_eval import EvalTransform, eval_batches, list_images
from evaluators.pretrained import INTERPOLATION, PUBLISHED
from evaluators.training.metrics import evaluate
from evaluators.training.optim import resolve_device
from search.weights import read_weights
from search_spaces.errors import ConfigError, DataError
from search_spaces.printout import format_columns
from search_spaces.reference import PAPER_FIGURES, reference_spec
from search_spaces.serialize import atomic_write_text

RESULT = "evaluation.json"


@dataclass
class EvaluateConfig:
    batch_size: int = 64
    num_workers: int = 4  # DataLoader worker processes decoding images (0: in the main process)
    interpolation: str = "auto"  # auto: the weights' source's (torchvision bilinear, timm bicubic)
    resize: int = 256  # shorter side before the centre crop (crop_pct 0.875 at 224)
    crop: int = 224
    width_mult: float = 1.0  # of the reference the weights belong to (timm's _075: 0.75)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"evaluate.batch_size: must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError(f"evaluate.num_workers: must be >= 0, got {self.num_workers}")


def figures_rows(measured: dict[str, Any], reference: str, source: str,
                 width_mult: float) -> list[tuple[str, ...]]:
    """The table's rows: this run, the paper (width 1.0), the source's published figures when known."""
    rows: list[tuple[str, ...]] = [(f"measured: {measured['images']} images, {measured['classes']} classes",
             f"{100 * measured['top1']:.3f}", f"{100 * measured['top5']:.3f}")]
    if width_mult == 1.0:
        rows.append(("paper (Howard et al. 2019)", f"{PAPER_FIGURES[reference]['top1']}", "-"))
    published = PUBLISHED.get((source, reference, width_mult))
    if published is not None:
        rows.append((published[0], f"{published[1]:.3f}", f"{published[2]:.3f}"))
    return rows


def _folder(data: DataConfig) -> Path:
    if data.name != "folder" or not data.root:
        raise ConfigError("data: action=evaluate reads an ImageNet-style validation folder; give data=folder "
                          "data.root=<dir with one sub-folder per class, e.g. ILSVRC2012 val/n01440764/...>")
    return Path(data.root).expanduser()


def evaluate_weights(options: EvaluateConfig, weights_file: str | None, data: DataConfig, run_dir: Path,
                     reference: str) -> dict[str, Any]:
    """Evaluate ``weights_file`` as ``reference`` on ``data.root``; print the table, write evaluation.json."""
    options.validate()
    if not weights_file:
        raise ConfigError("weights: action=evaluate needs weights=<file>: a torchvision, timm or mobilenas "
                          f"state_dict of {reference}")
    root = _folder(data)
    spec = reference_spec(reference, width_mult=options.width_mult)  # 1000 classes
    weights = read_weights(weights_file, spec, reference=reference, width_mult=options.width_mult)
    print(weights.summary())
    auto = options.interpolation == "auto"
    interpolation = INTERPOLATION[weights.source] if auto else options.interpolation
    transform = EvalTransform(options.resize, options.crop, interpolation)
    transform.validate()
    items, classes = list_images(root)
    if len(classes) > weights.spec.num_classes:
        raise DataError(f"data.root: {root} has {len(classes)} class folders, more than the weights' "
                        f"{weights.spec.num_classes} classes")
    device = resolve_device("auto")
    model = weights.build().to(device)
    result = evaluate(model, eval_batches(items, transform, batch_size=options.batch_size,
                                          num_workers=options.num_workers, device=device))
    measured = {"top1": result.top1, "top5": result.top5, "loss": result.loss, "images": result.count,
                "classes": len(classes)}
    print(f"\n{reference} on {root}: resize {options.resize} ({interpolation}), centre crop {options.crop}, "
          "ImageNet mean/std")
    print(format_columns(("", "top-1 %", "top-5 %"),
                         figures_rows(measured, reference, weights.source, options.width_mult)))
    if len(classes) != 1000:
        print(f"note: {len(classes)} class folders; the published figures are on ImageNet's 1000-class "
              "validation set (50,000 images)")
    record = {"reference": reference, "weights": str(weights.path), "source": weights.source,
              "spec": str(weights.spec), "data_root": str(root), "transform": asdict(transform),
              "device": device.type, **measured}
    atomic_write_text(run_dir / RESULT, json.dumps(record, indent=2) + "\n")
    print(f"written {run_dir / RESULT}")
    return record
