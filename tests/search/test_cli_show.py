from __future__ import annotations

import subprocess
import sys

from search.cli import COMMANDS, main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True,
                          timeout=120)


def test_show_prints_paper_table_and_exact_costs(capsys):
    main(["show", "arch=mobilenet_v3_small"])
    out = capsys.readouterr().out
    assert "224^2 x 3   conv2d 3x3" in out
    assert "bneck 5x5       576       96    yes  HS" in out
    assert "params 2,542,856" in out and "MAdds 59.6 M" in out
    assert "paper (224x224, 1000 classes)" in out


def test_show_string_format_roundtrips_through_the_cli(capsys):
    main(["show", "arch=mobilenet_v3_large", "format=string", "width_mult=0.75", "resolution=160"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("in_r160_c3 stem_k3_c16_s2_hs")
    main(["show", f"arch='{line}'", "format=string"])
    assert capsys.readouterr().out.strip() == line


def test_bad_input_gives_one_line_error_and_status_2():
    result = run_cli("show", "arch=ir_k4_e16_c16_s2_re")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: token 1 'ir_k4_e16_c16_s2_re': block: kernel must be one of {3, 5, 7}, got 4"
    )
    assert "Traceback" not in result.stderr
    result = run_cli("show", "format=xml")
    assert result.returncode == 2 and "show.format: 'xml' is not one of table" in result.stderr


def test_unknown_command_and_usage():
    result = run_cli("frobnicate")
    assert result.returncode == 2 and "unknown command 'frobnicate'; allowed: show" in result.stderr
    result = run_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert f"  {name}" in result.stdout


def test_every_listed_command_has_a_module_and_a_config():
    import importlib

    from search.cli import CONF_DIR

    for name, (module, _) in COMMANDS.items():
        assert callable(importlib.import_module(module).run)
        assert (CONF_DIR / f"{name}.yaml").is_file()


def composition_error(args: list[str], capsys) -> str:
    """The one ``error:`` line (exit 2) of ``mobilenas <args>``, without the prefix."""
    import pytest

    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        main(args)
    err = capsys.readouterr().err.strip()
    assert caught.value.code == 2 and "\n" not in err and err.startswith("error: "), err
    return err.removeprefix("error: ")


def test_config_composition_errors_are_one_line_naming_what_is_allowed(capsys):
    assert composition_error(["show", "foo=1"], capsys).startswith(
        "foo: unknown key for mobilenas show; allowed: limits, arch, width_mult, num_classes, resolution, "
        "format"
    )
    assert composition_error(["search", "latency.speed=1"], capsys).startswith(
        "latency.speed: unknown key for mobilenas search; allowed: device, threads,"
    )
    assert composition_error(["search", "data=imagenet"], capsys) == (
        "data=imagenet: no such option; allowed: cifar10, cifar100, fashion_mnist, folder, kmnist, mnist, "
        "synthetic"
    )
    assert composition_error(["show", "data=cifar10"], capsys) == (
        "data: mobilenas show has no such config group (see mobilenas show --help)"
    )
    assert composition_error(["show", "arch"], capsys) == \
        "'arch' is not key=value (e.g. arch=mobilenet_v3_small)"
    result = run_cli("train", "trainer=adam")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: trainer=adam: no such option; allowed: fast, sgd, v3_recipe"


def test_bad_values_are_refused_before_any_heavy_work(tmp_path, capsys):
    import pytest

    cases = [
        (["search", "study.workers=0"], "error: study.workers must be >= 1, got 0"),
        (["search", "study.sampler=grid"],
         "error: study.sampler: 'grid' is not one of tpe, random, nsga2, auto"),
        (["lut", "latency.fit_rounds=0"], "error: latency.fit_rounds: must be an integer >= 1, got 0"),
        (["measure", "latency.mode=guess"], "error: latency.mode: must be one of lut, measure, got 'guess'"),
        (["train", "threads=-2"], "error: train.threads: must be >= 0 (0: torch's default), got -2"),
        (["reproduce", "action=search", "compare.steps=0"], "error: compare.steps: must be >= 1, got 0"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_:
            main([*args, f"hydra.run.dir={tmp_path}/run"])
        assert exit_.value.code == 2 and capsys.readouterr().err.strip() == message
