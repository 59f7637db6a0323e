"""Structured configs (search.schema): each command's dataclass is the schema Hydra composes onto, the
YAML files carry only what differs from it, and Hydra/OmegaConf refuse bad keys, options and types
as one ``error:`` line with exit status 2."""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from evaluators.training import TrainConfig
from search.cli import COMMANDS, CONF_DIR, main
from search.pipeline import SearchConfig
from search.schema import compose_options

ROOT = Path(__file__).resolve().parents[2]


def schemas() -> dict[str, type]:
    """command -> its config dataclass (every command module names one ``CONFIG``)."""
    return {name: importlib.import_module(module).CONFIG for name, (module, _) in COMMANDS.items()}


def group_schemas() -> dict[str, type]:
    """group -> the dataclass of its options: the type of the commands' field of that name."""
    groups: dict[str, type] = {}
    for schema in schemas().values():
        for item in dataclasses.fields(schema):
            if (CONF_DIR / item.name).is_dir() and item.default_factory is not dataclasses.MISSING:
                groups[item.name] = type(item.default_factory())
    return groups


def restated(values: dict, defaults: dict, where: str) -> list[str]:
    """The keys of ``values`` equal to the schema's ``defaults`` (nested), or unknown to it."""
    found = []
    for key, value in values.items():
        if key not in defaults:
            found.append(f"{where}{key} (not in the schema)")
        elif isinstance(value, dict) and isinstance(defaults[key], dict):
            found += restated(value, defaults[key], f"{where}{key}.")
        elif value == defaults[key]:
            found.append(f"{where}{key}")
    return found


def test_every_group_option_carries_only_what_differs_from_its_schema():
    groups = group_schemas()
    assert {"space", "data", "trainer", "proxy", "latency", "objective", "netadapt", "limits"} <= set(groups)
    problems = []
    for group, schema in groups.items():
        defaults = OmegaConf.to_container(OmegaConf.structured(schema))
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            values = yaml.safe_load(path.read_text()) or {}
            problems += restated(values, defaults, f"{group}/{path.name}: ")
    assert problems == []


def test_every_primary_config_starts_with_its_schema_and_restates_no_default():
    problems = []
    for name, schema in schemas().items():
        values = yaml.safe_load((CONF_DIR / f"{name}.yaml").read_text())
        assert values["defaults"][0] == f"{name}_schema", name
        own = {k: v for k, v in values.items() if k not in ("defaults", "hydra")}
        problems += restated(own, OmegaConf.to_container(OmegaConf.structured(schema)), f"{name}.yaml: ")
    assert problems == []


def cli_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        main(args)
    err = capsys.readouterr().err.strip()
    assert caught.value.code == 2 and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("args, expected", [
    (["train", "trainer.lr=abc"],
     "error: trainer.lr: Value 'abc' of type 'str' could not be converted to Float"),
    (["show", "limits.max_channels=1.5"],
     "error: limits.max_channels: Value '1.5' of type 'float' could not be converted to Integer"),
    (["search", "space.kernels=3"],
     "error: space.kernels: Invalid value assigned: int is not a ListConfig, list or tuple."),
    (["measure", "latency=external"],
     "error: latency.device: required; give the device's name, e.g. latency.device=pixel7-tflite"),
])
def test_wrong_types_and_options_are_one_line_and_exit_2(args, expected, capsys):
    assert cli_error(args, capsys) == expected


def test_unknown_keys_are_refused_even_when_added_with_plus(capsys):
    """``+key=value`` adds a key Hydra accepts; the schema still refuses it (to_object would drop it)."""
    for args in (["train", "trainer.lrate=0.1"], ["train", "+trainer.lrate=0.1"]):
        err = cli_error(args, capsys)
        assert err.startswith("error: trainer.lrate: unknown key for mobilenas train; allowed: "), err
        allowed = ", ".join(item.name for item in dataclasses.fields(TrainConfig))
        assert err.endswith(f"; allowed: {allowed}") and "lr, momentum" in allowed, err


def test_cfg_job_shows_the_full_config_from_the_schema(capsys):
    main(["search", "--cfg", "job"])
    shown = yaml.safe_load(capsys.readouterr().out)
    expected = dataclasses.asdict(SearchConfig())
    expected["space"]["seed"] = "mobilenet_v3_small"  # space=v3_small
    expected["objective"]["mode"] = "hard"  # objective=hard
    assert shown == expected


def test_a_group_option_applies_its_differences_over_the_commands_defaults():
    options = compose_options("search", ["trainer=sgd", "objective=pareto"])
    assert isinstance(options, SearchConfig)
    trainer = options.trainer  # sgd.yaml's keys over the search's trainer (batch 64, no progress bar)
    assert (trainer.optimizer, trainer.lr, trainer.nesterov, trainer.batch_size, trainer.progress) == \
        ("sgd", 0.01, True, 64, False)
    assert (options.objective.mode, options.objective.target_ratio) == ("pareto", 0.85)


def test_no_config_class_is_applied_by_hand():
    needle = re.compile(r"\btyped" + r"\(")
    hits = [f"{path.relative_to(ROOT)}:{number}"
            for folder in ("search", "evaluators", "search_spaces", "benchmarks", "tests")
            for path in (ROOT / folder).rglob("*.py")
            for number, line in enumerate(path.read_text().splitlines(), 1) if needle.search(line)]
    assert hits == []
