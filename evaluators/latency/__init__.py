"""Latency: measured with a stated protocol, or predicted from a per-layer lookup table.

The search calls :func:`latency_evaluator` with a :class:`LatencyConfig`; the rest is the
machinery behind it and the ``measure`` and ``lut`` commands.
"""

from evaluators.latency.config import LatencyConfig, default_table_name, latency_evaluator
from evaluators.latency.csv_format import export_layers_csv
from evaluators.latency.csv_io import ImportSummary, import_csv, read_latency_csv
from evaluators.latency.evaluator import LutLatency, MeasuredLatency
from evaluators.latency.fit import OverheadFit, fit_scale_overhead, reference_fit_specs
from evaluators.latency.keys import layer_from_key
from evaluators.latency.measure import LatencyResult, measure_latency, measure_many
from evaluators.latency.protocol import Fingerprint, LatencyProtocol, local_fingerprint
from evaluators.latency.table import LatencyTable
from evaluators.latency.validate import (
    ValidationReport,
    plot_validation,
    space_fit_specs,
    validate_table,
)

__all__ = [
    "Fingerprint",
    "ImportSummary",
    "LatencyConfig",
    "LatencyProtocol",
    "LatencyResult",
    "LatencyTable",
    "LutLatency",
    "MeasuredLatency",
    "OverheadFit",
    "ValidationReport",
    "default_table_name",
    "export_layers_csv",
    "fit_scale_overhead",
    "import_csv",
    "latency_evaluator",
    "layer_from_key",
    "local_fingerprint",
    "measure_latency",
    "measure_many",
    "plot_validation",
    "read_latency_csv",
    "reference_fit_specs",
    "space_fit_specs",
    "validate_table",
]
