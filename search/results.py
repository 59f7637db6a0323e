"""Results of a search, read back from the study alone: candidates, the Pareto front, the
winner, a table and a plot."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.objectives import Objective
from search_spaces.blockstring import from_string
from search_spaces.printout import format_columns
from search_spaces.spec import ArchSpec


@dataclass(frozen=True)
class Candidate:
    """One evaluated architecture, as recorded on its trial."""

    number: int
    spec: str
    accuracy: float
    latency_ms: float
    madds: int
    params: int
    reward: float
    feasible: bool

    @property
    def arch(self) -> ArchSpec:
        return from_string(self.spec)


def candidates(study: optuna.Study, objective: Objective) -> list[Candidate]:
    """Completed trials, one per distinct spec (duplicates reuse an earlier trial's result)."""
    return candidates_of(study.get_trials(deepcopy=False), objective)


def candidates_of(trials: Sequence[FrozenTrial], objective: Objective) -> list[Candidate]:
    """:func:`candidates` of a snapshot of a study's trials."""
    seen: set[str] = set()
    found = []
    for trial in trials:
        if trial.state != TrialState.COMPLETE:
            continue
        attrs = trial.user_attrs
        if "accuracy" not in attrs or attrs["spec"] in seen:
            continue
        seen.add(attrs["spec"])
        accuracy, latency = float(attrs["accuracy"]), float(attrs["latency_ms"])
        found.append(Candidate(
            number=trial.number, spec=attrs["spec"], accuracy=accuracy, latency_ms=latency,
            madds=int(attrs["madds"]), params=int(attrs["params"]),
            reward=objective.reward(accuracy, latency), feasible=objective.feasible(latency),
        ))
    return found


def state_counts(trials: Sequence[FrozenTrial]) -> dict[TrialState, int]:
    """How many of ``trials`` are in each state."""
    counts = {state: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state] += 1
    return counts


def pareto_front(found: Sequence[Candidate]) -> list[Candidate]:
    """Candidates no other beats in both accuracy (higher) and latency (lower), by latency."""
    front: list[Candidate] = []
    best_accuracy = -math.inf
    for c in sorted(found, key=lambda c: (c.latency_ms, -c.accuracy)):
        if c.accuracy > best_accuracy:
            front.append(c)
            best_accuracy = c.accuracy
    return front


def winner(found: Sequence[Candidate]) -> Candidate | None:
    """The best reward among candidates that meet the target; the best overall if none does."""
    feasible = [c for c in found if c.feasible]
    pool = feasible or list(found)
    return max(pool, key=lambda c: (c.reward, -c.latency_ms)) if pool else None


def ranking_table(found: Sequence[Candidate], top_k: int = 10) -> str:
    best = sorted(found, key=lambda c: c.reward, reverse=True)[:top_k]
    rows = [(str(c.number), f"{c.reward:.4f}", f"{c.accuracy:.4f}", f"{c.latency_ms:.3f}",
             "yes" if c.feasible else "no", f"{c.madds / 1e6:.1f}", f"{c.params / 1e6:.2f}", c.spec)
            for c in best]
    header = ("trial", "reward", "accuracy", "latency ms", "meets target", "MAdds M", "params M", "spec")
    return format_columns(header, rows)


def plot_accuracy_latency(
    found: Sequence[Candidate],
    objective: Objective,
    path: str | os.PathLike[str],
    *,
    references: Mapping[str, tuple[float, float]] | None = None,
    title: str = "",
) -> Path:
    """Accuracy vs latency: every candidate, the Pareto front, the target line, the winner and
    reference points (name -> (latency ms, accuracy)). Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    ax.scatter([c.latency_ms for c in found], [c.accuracy for c in found], s=18, c="tab:gray",
               alpha=0.7, label="candidates")
    front = pareto_front(found)
    ax.plot([c.latency_ms for c in front], [c.accuracy for c in front], "-o", c="tab:blue", ms=4,
            label="Pareto front")
    ax.axvline(objective.target_ms, c="tab:red", ls="--", label=f"target {objective.target_ms:.2f} ms")
    best = winner(found)
    if best is not None:
        ax.scatter([best.latency_ms], [best.accuracy], marker="*", s=220, c="gold", edgecolors="k",
                   zorder=5, label=f"winner (trial {best.number})")
    for name, (latency, accuracy) in (references or {}).items():
        ax.scatter([latency], [accuracy], marker="s", s=50, c="tab:green", zorder=4)
        ax.annotate(name, (latency, accuracy), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"{objective.mode} objective, {len(found)} candidates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path
