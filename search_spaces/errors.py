"""The project's exceptions, all here; every run ends in one of three ways.

* Bad input (a config value, a spec, a data set, a latency table, an export directory):
  :class:`MobilenasError` or a subclass. The CLI prints one line ``error: <what, where, what is
  allowed>`` and exits with status 2.
* A run that started from good input but failed (diverged training, an export whose artifact does
  not reproduce the network): :class:`RunFailure` or a subclass. The CLI prints one line
  ``failed: <what happened and what to change>`` and exits with status 1.
* Anything else is a bug: it propagates, with its traceback.

Spawned search workers report the first two the same way (their exit status is 2 or 1). Each
subclass is caught apart from its parent somewhere (e.g. :class:`TrainingDiverged` by the search,
which marks the candidate's trial failed and goes on); a new problem raises the closest class here
rather than a new one.
"""

from __future__ import annotations


class MobilenasError(Exception):
    """Root of every error caused by bad input (config, spec, data, files): exit status 2."""


class ConfigError(MobilenasError, ValueError):
    """A config value (``group.field``, an override, a latency protocol setting) is not allowed;
    the message names the field and what is allowed."""


class SpecError(MobilenasError, ValueError):
    """An architecture spec, spec string or spec file is invalid, or a search space cannot express
    it; says where and what."""


class DataError(MobilenasError, ValueError):
    """An input file of a run (a data set, a checkpoint to resume) is missing, unreadable, corrupt,
    over a limit, or does not fit the run's settings."""


class LatencyError(MobilenasError):
    """A latency measurement or lookup cannot be done as asked: a lookup table or CSV that is
    missing, malformed or measured under another protocol, rows an external device lacks, a device
    this machine cannot measure."""


class ExportError(MobilenasError):
    """An export cannot be written or loaded as asked: its name, output directory, options,
    weights, source run or manifest."""


class RunFailure(Exception):
    """A run that started from good input but failed (diverged training, a failed check): exit 1.

    Not a :class:`MobilenasError`: the input was fine, the result is not."""


class TrainingDiverged(RunFailure):
    """Training diverged (NaN or infinite loss, exploding weights): a train run, a NetAdapt seed or
    fine-tuning, or a search candidate (whose trial the search marks failed and goes on)."""


def outcome(err: MobilenasError | RunFailure) -> tuple[str, int]:
    """How a command reports ``err``: ``("error", 2)`` for bad input, ``("failed", 1)`` for a failed run."""
    return ("error", 2) if isinstance(err, MobilenasError) else ("failed", 1)
