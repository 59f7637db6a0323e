"""The CSV form of latency rows measured elsewhere, and the writer of the layers to measure.

One row per layer configuration. Columns (header names, any order):

==================  ===================================================================
``key``             the layer key, e.g. ``block:r56:c24:ir_k3_e72_c24_s1_re`` -- or the
                    four columns ``kind``, ``resolution``, ``in_channels``, ``op`` instead
``kind``            ``stem``, ``block`` or ``head``
``resolution``      the layer's input height = width
``in_channels``     the layer's input channels
``op``              the layer's token (spec string form, e.g. ``ir_k3_e72_c24_s1_re``)
``input_shape``     informative: ``batch x channels x height x width`` of the input
``latency_ms``      the measured latency in ms; empty in an export, empty rows are skipped
``device`` ...      protocol columns: ``device``, ``threads``, ``batch_size``,
                    ``input_resolution`` (the network's input), ``memory_format``,
                    ``warmup``, ``runs``, ``statistic``, ``timer``,
                    ``drift_correction`` (``none`` for devices measured elsewhere),
                    ``runtime`` (``torch`` or ``onnxruntime``), ``ort_optimization``,
                    ``ort_provider`` (``-`` for torch)
==================  ===================================================================

A row whose ``key`` is ``overhead`` sets the per-network overhead (ms) added to every
prediction (otherwise 0: a plain sum of layer rows); one whose ``key`` is ``scale`` (its
``latency_ms`` cell a factor) sets the factor on the sum of layers (otherwise 1). Reading and
importing such a CSV into a table is :mod:`evaluators.latency.csv_io`; this module depends on
no table, so that a table can write the layers it lacks (see
:meth:`~evaluators.latency.table.LatencyTable.build`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path

from evaluators.latency.keys import FIELD_COLUMNS
from evaluators.latency.protocol import LatencyProtocol
from search_spaces.serialize import atomic_write_text
from search_spaces.spec import Layer

OVERHEAD_KEY = "overhead"
SCALE_KEY = "scale"
LATENCY_COLUMN = "latency_ms"
# CSV column -> protocol field
PROTOCOL_COLUMNS = {
    "device": "device",
    "threads": "threads",
    "batch_size": "batch_size",
    "input_resolution": "resolution",
    "memory_format": "memory_format",
    "warmup": "warmup",
    "runs": "runs",
    "statistic": "statistic",
    "timer": "timer",
    "drift_correction": "drift_correction",
    "runtime": "runtime",
    "ort_optimization": "ort_optimization",
    "ort_provider": "ort_provider",
}
COLUMNS = ("key", *FIELD_COLUMNS, "input_shape", LATENCY_COLUMN, *PROTOCOL_COLUMNS)


def export_layers_csv(
    layers: Iterable[Layer], path: str | os.PathLike[str], protocol: LatencyProtocol
) -> Path:
    """Write ``layers`` (distinct, in order) as CSV rows with an empty ``latency_ms``: the list
    of configurations to measure on a device under ``protocol`` (its values fill the protocol
    columns)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    settings = [getattr(protocol, name) for name in PROTOCOL_COLUMNS.values()]
    for layer in dict.fromkeys(layers):
        shape = f"{protocol.batch_size}x{layer.in_channels}x{layer.resolution}x{layer.resolution}"
        writer.writerow(
            [
                layer.key,
                layer.kind,
                layer.resolution,
                layer.in_channels,
                layer.token,
                shape,
                "",
                *settings,
            ]
        )
    return atomic_write_text(path, buffer.getvalue())
