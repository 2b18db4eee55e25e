"""The bad-input catalogue: every bad input to the public API or the command line ends in an error whose message
names the problem (the field or value and what is expected). Command-line cases run `experiments.run.main(argv)`
in-process: exit status 2, one line `error: ...` on stderr, no traceback, nothing written into the workdir."""
import json
import re
from pathlib import Path

import pytest
from _tiny_cli import TINY, TINY_DATA

from experiments import run as runner


def cli(workdir, *args) -> int:
    """The runner on the tiny quickstart (its exact data), in-process; returns the exit status."""
    return runner.main(["di4c-run", f"--workdir={workdir}", *TINY, *TINY_DATA, *args])


def snapshot(path: Path) -> dict:
    """Every file under `path` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


def assert_error(capsys, status: int, pattern: str) -> str:
    """Exit status 2 and exactly one stderr line, `error: ...` matching `pattern`."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workdir whose tiny teacher is trained (the quickstart law, vocabulary 3, D = 6)."""
    workdir = tmp_path_factory.mktemp("trained")
    assert cli(workdir, "--stage=train_teacher") == 0
    return workdir


# ----------------------------------------------------------------------------------------- config values
@pytest.mark.parametrize("override, pattern", [
    ("--config.teacher.optim.learning_rate=-0.001", r"teacher\.optim\.learning_rate must be > 0, got -0\.001"),
    ("--config.distill.optim.learning_rate=0.0", r"distill\.optim\.learning_rate must be > 0, got 0\.0"),
    ("--config.teacher.steps=0", r"teacher\.steps must be >= 1, got 0"),
    ("--config.distill.steps=-5", r"distill\.steps must be >= 1, got -5"),
    ("--config.teacher.batch_size=0", r"teacher\.batch_size must be >= 1, got 0"),
    ("--config.distill.batch_size=-8", r"distill\.batch_size must be >= 1, got -8"),
    ("--config.distill.loss.num_lambda=0", r"distill\.loss: .*num_lambda .*must be >= 1, got 0"),
    ("--config.sample.num_samples=0", r"sample\.num_samples must be >= 1, got 0"),
    ("--config.sample.student_steps=(0,)", r"sample\.student_steps must be step counts >= 1, got \(2, 0\)"),
    ("--config.teacher.optim.learning_rat=0.1", r"teacher\.optim has no field\(s\) \['learning_rat'\]"),
    ("--config.sample.samplesize=3", r"sample has no field\(s\) \['samplesize'\]"),
    ("--config.teacher.steps=abc", r"--config\.teacher\.steps=abc: invalid literal for int"),
], ids=["negative_lr", "zero_lr", "zero_steps", "negative_steps", "zero_batch", "negative_batch", "zero_N",
        "zero_samples", "zero_sample_steps", "mistyped_optim_key", "unknown_sample_key", "steps_not_a_number"])
def test_bad_config_value_is_one_line_naming_the_field(tmp_path, capsys, override, pattern):
    workdir = tmp_path / "run"
    assert_error(capsys, cli(workdir, override), pattern)
    assert not workdir.exists()


# ----------------------------------------------------------------------------------------- flags and files
def test_missing_config_file_is_named(tmp_path, capsys):
    status = cli(tmp_path / "run", f"--config={tmp_path}/nothere.py:sdtt")
    assert_error(capsys, status, r"--config .*nothere\.py:sdtt: no such file")


def test_unknown_stage_is_named(tmp_path, capsys):
    assert_error(capsys, cli(tmp_path / "run", "--stage=trian"), r"--stage=trian: value should be one of")


def test_missing_workdir_flag_is_named(capsys):
    assert_error(capsys, runner.main(["di4c-run", *TINY]), r"--workdir must have a value")


def test_workdir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("not a directory")
    assert_error(capsys, cli(path), r"--workdir .*file is a file; expected a directory")
    assert path.read_text() == "not a directory"


def test_debug_flag_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match=r"teacher\.steps must be >= 1"):
        cli(tmp_path / "run", "--config.teacher.steps=0", "--debug")


# ----------------------------------------------------------------------------------------- devices
def test_mesh_larger_than_the_devices(tmp_path, capsys):
    assert_error(capsys, cli(tmp_path / "run", "--config.mesh.fsdp=16"),
                 r"config\.mesh\.fsdp=16 does not fit the 8 device\(s\)")


def test_batch_not_divisible_by_the_data_axis(tmp_path, capsys):
    assert_error(capsys, cli(tmp_path / "run", "--config.teacher.batch_size=12"),
                 r"config\.teacher\.batch_size=12 is not divisible by the mesh's data axes .*multiple of 8")


# ----------------------------------------------------------------------------------------- teachers
def test_mistyped_teacher_workdir_is_named_and_not_created(tmp_path, capsys):
    typo = tmp_path / "runs" / "quickstrat"
    assert_error(capsys, cli(tmp_path / "run", f"--config.teacher_workdir={typo}"),
                 r"config\.teacher_workdir='.*quickstrat': no such directory")
    assert not typo.exists() and not (tmp_path / "run").exists()


def test_foreign_teacher_workdir_without_a_teacher(tmp_path, capsys):
    foreign = tmp_path / "elsewhere"
    (foreign / "samples").mkdir(parents=True)
    assert_error(capsys, cli(tmp_path / "run", f"--config.teacher_workdir={foreign}"),
                 r"teacher_workdir='.*elsewhere' holds no teacher checkpoint")


@pytest.mark.parametrize("override, pattern", [
    ("--config.model.overrides.hidden=32", r"dense_in/bias has shape \(16,\) there, \(32,\) here"),
    ("--config.data.num_states=4", r"K=5 states.*tok_embed/table has shape \(4, 4\) there, \(5, 4\) here"),
], ids=["architecture", "vocabulary"])
def test_teacher_checkpoint_of_another_network(trained, tmp_path, capsys, override, pattern):
    before = snapshot(trained)
    status = cli(tmp_path / "run", f"--config.teacher_workdir={trained}", override)
    line = assert_error(capsys, status, r"teacher: its checkpoint \(step 4\) holds a teacher of another "
                                        r"architecture or vocabulary")
    assert re.search(pattern, line), line
    assert not (tmp_path / "run").exists()
    # the same change on the trained workdir itself: refused, and nothing in it is touched
    assert_error(capsys, cli(trained, override), "another architecture or vocabulary")
    assert snapshot(trained) == before


def test_failed_check_writes_nothing_into_a_good_workdir(trained, capsys):
    before = snapshot(trained)
    assert_error(capsys, cli(trained, "--config.teacher.optim.learning_rate=-1.0"), "learning_rate must be > 0")
    assert_error(capsys, cli(trained, "--config.mesh.fsdp=3"), "mesh.fsdp=3")
    assert snapshot(trained) == before
    assert json.loads((trained / "config.json").read_text())["teacher"]["optim"]["learning_rate"] > 0
