"""The run record: one versioned schema, read back exactly, every bad file one DataError line."""

from __future__ import annotations

import json

import pytest

from search.run_record import (
    MAX_RECORD_BYTES,
    RUN_RECORD,
    VERSION,
    RunRecord,
    read_run_record,
    write_run_record,
)
from search_spaces.blockstring import from_string
from search_spaces.errors import DataError

TINY = "in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k3_e24_c16_s2_hs head_c32_h48_hs_d0.2_n4"
RECORD = RunRecord(kind="refine", spec=from_string(TINY), weights="weights.safetensors",
                   accuracy={"val_top1": 0.5, "test_top1": 0.375}, latency_ms=1.25,
                   protocol={"device": "cpu", "threads": 1}, data={"name": "synthetic"},
                   budget={"final_steps": 3}, provenance={"method": "NetAdapt", "iterations": 2})


def test_a_record_reads_back_equal_and_feeds_the_card(tmp_path):
    assert read_run_record(tmp_path) is None  # no record: nothing to read, not an error
    path = write_run_record(tmp_path, RECORD)
    assert path == tmp_path / RUN_RECORD
    assert json.loads(path.read_text())["version"] == VERSION
    assert read_run_record(tmp_path) == RECORD
    card = RECORD.card_metadata()
    assert card["latency_ms"] == 1.25 and card["accuracy"] == {"val_top1": 0.5, "test_top1": 0.375}
    assert card["provenance"]["iterations"] == 2 and "split" not in card["accuracy"]


def _write(tmp_path, **changes):
    data = {**RECORD.to_json(), **changes}
    (tmp_path / RUN_RECORD).write_text(json.dumps(data))


@pytest.mark.parametrize("changes, message", [
    ({"version": VERSION + 1}, f"run record version {VERSION + 1}; this mobilenas reads versions 1 to"),
    ({"schema": "someone.else"}, "not a mobilenas run record"),
    ({"kind": "dream"}, r"malformed run record \(kind: 'dream' is not one of train, search, refine\)"),
    ({"weights": "../../etc/weights.safetensors"}, "is not a .safetensors file name in the run dir"),
    ({"accuracy": {"top1": "high"}}, "malformed run record"),
    ({"spec": {"blocks": 3}}, "malformed run record"),
])
def test_a_foreign_newer_or_malformed_record_is_one_data_error(tmp_path, changes, message):
    _write(tmp_path, **changes)
    with pytest.raises(DataError, match=message) as info:
        read_run_record(tmp_path)
    assert str(tmp_path / RUN_RECORD) in str(info.value) and "\n" not in str(info.value)


def test_a_missing_key_or_an_oversized_file_is_refused(tmp_path):
    data = RECORD.to_json()
    del data["latency_ms"]
    (tmp_path / RUN_RECORD).write_text(json.dumps(data))
    with pytest.raises(DataError, match="malformed run record \\(missing key 'latency_ms'\\)"):
        read_run_record(tmp_path)
    (tmp_path / RUN_RECORD).write_text(" " * (MAX_RECORD_BYTES + 1))
    with pytest.raises(DataError, match="more than a run record's"):
        read_run_record(tmp_path)
