"""A NetAdapt run's history as values: the seed, then one record per iteration with every
candidate tried. Converted to plain JSON data only at the file boundary (``history.json`` and
the checkpoints), where a malformed record is a :class:`~search_spaces.errors.DataError`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from search.netadapt.proposals import Proposal
from search_spaces.blockstring import from_string
from search_spaces.errors import DataError, MobilenasError
from search_spaces.spec import ArchSpec


@dataclass(frozen=True)
class CandidateRecord:
    """One proposal of an iteration: the network it proposed, its accuracy (after the short
    fine-tune, or its supernet score) and its score under the run's metric."""

    proposal: Proposal
    accuracy: float
    score: float

    @property
    def label(self) -> str:
        return self.proposal.label

    def to_json(self) -> dict[str, Any]:
        return {**self.proposal.to_dict(), "accuracy": self.accuracy, "score": self.score}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CandidateRecord:
        proposal = Proposal(str(data["kind"]), tuple(int(b) for b in data["blocks"]), bool(data["stem"]),
                            int(data["old_channels"]), int(data["new_channels"]),
                            float(data["latency_before_ms"]), float(data["latency_after_ms"]),
                            from_string(str(data["spec"])))
        return cls(proposal, float(data["accuracy"]), float(data["score"]))


@dataclass(frozen=True)
class IterationRecord:
    """The network after one iteration (``iteration`` 0: the seed; ``chosen``: the label of the
    proposal kept, None for the seed), its latency and accuracy, and every candidate tried (how the
    accuracies were measured is the run's, in its record's provenance)."""

    iteration: int
    chosen: str | None
    latency_ms: float
    accuracy: float
    spec: ArchSpec
    candidates: tuple[CandidateRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "chosen": self.chosen, "latency_ms": self.latency_ms,
                "accuracy": self.accuracy, "spec": str(self.spec),
                "candidates": [c.to_json() for c in self.candidates]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IterationRecord:
        chosen = data["chosen"]
        return cls(int(data["iteration"]), None if chosen is None else str(chosen), float(data["latency_ms"]),
                   float(data["accuracy"]), from_string(str(data["spec"])),
                   tuple(CandidateRecord.from_json(c) for c in data["candidates"]))


History = tuple[IterationRecord, ...]


def history_to_json(history: Sequence[IterationRecord]) -> list[dict[str, Any]]:
    """``history`` as JSON-ready data (what ``history.json`` holds)."""
    return [record.to_json() for record in history]


def history_from_json(data: Any, where: str) -> History:
    """The history stored in ``where``; DataError when it is not one."""
    try:
        if not isinstance(data, list) or not data:
            raise TypeError("not a non-empty list")
        return tuple(IterationRecord.from_json(record) for record in data)
    except (KeyError, TypeError, ValueError, MobilenasError) as err:
        raise DataError(f"{where}: not a NetAdapt history ({type(err).__name__}: {err})") from None
