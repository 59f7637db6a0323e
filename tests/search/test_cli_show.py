from __future__ import annotations

import subprocess
import sys

from search.cli import COMMANDS, main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True, timeout=120)


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
