"""`--data` end to end through the runner: a folder of text files and a tfds dataset (digits, prepared in the
workdir) train, distil, sample and evaluate at test size and exit 0 with the teacher-vs-student table."""
import json
import pathlib

import pytest

from _tiny_cli import TINY
from experiments import run as runner

STDLIB = pathlib.Path(json.__file__).parent  # a few real text files that ship with Python


def _rows(workdir):
    return json.loads((workdir / "results.json").read_text())["rows"]


@pytest.mark.slow
def test_runner_on_a_folder_of_text_files(tmp_path, capsys):
    folder = tmp_path / "texts"
    folder.mkdir()
    for path in sorted(STDLIB.glob("*.py")):
        (folder / (path.stem + ".txt")).write_text(path.read_text())
    workdir = tmp_path / "run"
    status = runner.main(["di4c-run", f"--data={folder}", "--tokenizer=char", f"--workdir={workdir}", *TINY,
                          "--config.data.seq_len=8"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "| teacher | 2 |" in out and "| student | 2 |" in out
    rows = _rows(workdir)
    assert {r["model"] for r in rows} == {"teacher", "student"}
    for row in rows:  # K^8 joint states is far too many to count: the marginal and pairwise scores replace TV
        assert row["marginal_kl"] >= 0.0 and row["pairwise_mi_error"] >= 0.0 and "tv" not in row
    assert (workdir / "samples" / "teacher_2steps.txt").read_text()


@pytest.mark.slow
def test_runner_on_a_tfds_dataset(tmp_path, capsys):
    workdir = tmp_path / "run"
    status = runner.main(["di4c-run", "--data=tfds:digits", f"--workdir={workdir}", *TINY,
                          "--config.data.holdout=100"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "held out 100 of" in out and "| student | 2 |" in out
    assert {r["model"] for r in _rows(workdir)} == {"teacher", "student"}
