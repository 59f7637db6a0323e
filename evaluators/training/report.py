"""Files describing a training run: ``metrics.json``, ``metrics.csv`` and a learning-curve PNG."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search_spaces.serialize import atomic_write_text

HISTORY_COLUMNS = ("step", "epoch", "lr", "train_loss", "val_loss", "val_top1", "val_top5", "seconds")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> None:
    """``metrics.json`` (NaN written as null) and ``metrics.csv`` (one row per evaluation)."""
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "metrics.json", json.dumps(_json_safe(metrics), indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(metrics.get("history", []))
    atomic_write_text(run_dir / "metrics.csv", buffer.getvalue())


def plot_learning_curve(history: Sequence[dict[str, float]], path: str | Path, *, title: str = "") -> Path:
    """Training loss and validation top-1 against the step, as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from search_spaces.serialize import atomic_write

    steps = [h["step"] for h in history]
    fig, loss_axis = plt.subplots(figsize=(7, 4), dpi=100)
    loss_axis.plot(steps, [h["train_loss"] for h in history], "o-", color="tab:blue", label="train loss")
    loss_axis.plot(steps, [h["val_loss"] for h in history], "s--", color="tab:cyan", label="val loss")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    acc_axis = loss_axis.twinx()
    acc_axis.plot(steps, [100 * h["val_top1"] for h in history], "^-", color="tab:red", label="val top-1 %")
    acc_axis.set_ylabel("top-1 (%)")
    lines = loss_axis.get_lines() + acc_axis.get_lines()
    loss_axis.legend(lines, [str(line.get_label()) for line in lines], loc="center right")
    loss_axis.set_title(title)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
