"""pyproject's console scripts (di4c-run, di4c-bench, di4c-report, di4c-convert, di4c-export) resolve to functions that run their command
lines: --help exits 0 with the flags, bad input exits 2 with one line `error: ...`."""
import importlib
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def entry(name: str):
    module, _, function = SCRIPTS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def test_pyproject_names_the_scripts():
    assert SCRIPTS == {"di4c-run": "experiments.run:cli", "di4c-bench": "experiments.bench:cli",
                       "di4c-report": "experiments.report:cli", "di4c-convert": "experiments.convert:cli",
                       "di4c-export": "experiments.export:cli"}
    installed = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")
                 if ep.name.startswith("di4c-")}
    if installed:  # an install made before the scripts existed lists none; a fresh one lists these
        assert installed == SCRIPTS


@pytest.mark.parametrize("name, flag", [("di4c-run", "--data"), ("di4c-bench", "--steps"),
                                        ("di4c-report", "--compare"), ("di4c-convert", "--family"),
                                        ("di4c-export", "--family")])
def test_help_exits_zero_and_lists_the_flags(name, flag, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        entry(name)()
    assert exit_info.value.code in (0, None)
    assert flag in capsys.readouterr().out


@pytest.mark.parametrize("name, argv, pattern", [
    ("di4c-bench", ["--workdir", "{tmp}"], "holds no config.json: expected the workdir of an experiment run"),
    ("di4c-report", ["{tmp}", "--out", "{tmp}/out"], "holds a results.json: expected the workdirs of finished"),
    ("di4c-convert", ["--family", "sdtt", "--checkpoint", "{tmp}/none.ckpt", "--out", "{tmp}/tw"],
     "none.ckpt: no such checkpoint file"),
    ("di4c-export", ["--workdir", "{tmp}", "--family", "sdtt", "--out", "{tmp}/x"], "config.json"),
])
def test_bad_input_is_one_line_and_exit_two(name, argv, pattern, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [name, *(a.format(tmp=tmp_path) for a in argv)])
    with pytest.raises(SystemExit) as exit_info:
        entry(name)()
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert exit_info.value.code == 2 and len(err) == 1 and pattern in err[0]
