"""experiments.convert: a released checkpoint becomes a teacher workdir that the runner distils directly."""
import json

import jax
import numpy as np
import pytest

from _tiny_cli import TINY, TINY_DATA
from di4c_jax.interop import load_checkpoint, save_checkpoint
from di4c_jax.models import build_denoiser
from experiments import convert, run as runner


def _released(tmp_path, num_states=4, num_positions=6):
    """A tiny DiT of the quickstart's K=4 (3 states + mask) and D=6, written in our export format."""
    denoiser, params = build_denoiser(dict(name="dit-tiny", num_states=num_states, num_positions=num_positions,
                                           dropout=0.0), jax.random.key(3))
    return save_checkpoint(denoiser, params, tmp_path / "release"), params


def test_convert_writes_the_teacher_workdir_bit_exactly(tmp_path):
    folder, params = _released(tmp_path)
    assert convert.main(["--family", "di4c", "--checkpoint", str(folder), "--out", str(tmp_path / "tw")]) == 0
    released = tmp_path / "tw" / "teacher" / "released"
    assert json.loads((released / "source.json").read_text())["family"] == "di4c"
    _, back = load_checkpoint(released, "di4c")
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        np.testing.assert_array_equal(a, b)

    # the runner distilling a converted teacher: tests/test_convert_released.py (an sdtt folder, end to end)


def test_data_that_does_not_fit_the_released_teacher_is_named(tmp_path, capsys):
    folder, _ = _released(tmp_path, num_states=5)
    assert convert.main(["--family", "di4c", "--checkpoint", str(folder), "--out", str(tmp_path / "tw")]) == 0
    status = runner.main(["di4c-run", f"--workdir={tmp_path / 'run'}", *TINY, *TINY_DATA,
                          f"--config.teacher_workdir={tmp_path / 'tw'}"])
    err = capsys.readouterr().err
    assert status == 2 and "released teacher has num_states=5" in err and "K=4" in err


def test_convert_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    folder, _ = _released(tmp_path)
    monkeypatch.setattr("sys.argv", ["di4c-convert", "--family", "sdtt-nope", "--checkpoint", str(folder),
                                     "--out", str(tmp_path / "tw")])
    with pytest.raises(SystemExit) as exit_:
        convert.cli()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: unknown checkpoint family 'sdtt-nope'")
    assert convert.main(["--family", "di4c", "--checkpoint", str(folder), "--out", str(tmp_path / "tw")]) == 0
    with pytest.raises(FileExistsError, match="converted into this workdir already"):
        convert.main(["--family", "di4c", "--checkpoint", str(folder), "--out", str(tmp_path / "tw")])
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        convert.parse_setting("16")
    assert convert.parse_setting("attn_resolutions=(16,)") == ("attn_resolutions", (16,))
