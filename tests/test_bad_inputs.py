"""The bad-input catalogue: every bad input to the public API or the command line ends in an error whose message
names the problem (the field or value and what is expected). Command-line cases run `experiments.run.main(argv)`
in-process: exit status 2, one line `error: ...` on stderr, no traceback, nothing written into the workdir."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from _tiny_cli import TINY, TINY_DATA

from experiments import run as runner
from experiments.cli import last_override_wins


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
    ("--config.sample.student_steps=(0,)", r"sample\.student_steps must be step counts >= 1, got \(0,\)"),
    ("--config.sample.teacher_steps=(2,2,4)", r"sample\.teacher_steps=\(2, 2, 4\) repeats \[2\]; give each step "
                                              r"count once$"),
    ("--config.sample.options.time_warp=cosine", r"unknown time warp 'cosine'"),
    ("--config.sample.options.share_lam=1", r"share_lam must be True or False, got 1$"),
    ("--config.teacher.optim.learning_rat=0.1", r"teacher\.optim has no field\(s\) \['learning_rat'\]"),
    ("--config.sample.samplesize=3", r"sample has no field\(s\) \['samplesize'\]"),
    ("--config.teacher.steps=abc", r"--config\.teacher\.steps=abc: invalid literal for int"),
], ids=["negative_lr", "zero_lr", "zero_steps", "negative_steps", "zero_batch", "negative_batch", "zero_N",
        "zero_samples", "zero_sample_steps", "repeated_sample_steps", "bad_time_warp", "share_lam_not_bool",
        "mistyped_optim_key", "unknown_sample_key", "steps_not_a_number"])
def test_bad_config_value_is_one_line_naming_the_field(tmp_path, capsys, override, pattern):
    workdir = tmp_path / "run"
    assert_error(capsys, cli(workdir, override), pattern)
    assert not workdir.exists()


def test_a_repeated_override_keeps_its_last_value():
    # ml_collections alone appends a repeated tuple override ((2,) then (0,) gave (2, 0)); the zero_sample_steps
    # case above checks the runner now sees (0,)
    argv = ["di4c-run", "--config.sample.x=(4,8)", "--config.seed=1", "--config=q.py", "--workdir=w",
            "-config.sample.x=()", "--config.seed=2", "--config.sample.y", "3"]
    assert last_override_wins(argv) == ["di4c-run", "--config=q.py", "--workdir=w", "-config.sample.x=()",
                                        "--config.seed=2", "--config.sample.y", "3"]


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


# ----------------------------------------------------------------------------------------- --data files
def _save(path: Path, array) -> Path:
    np.save(path, array)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(path: Path) -> Path:
    data = (_save(path, np.zeros((50, 6), np.int32))).read_bytes()
    path.write_bytes(data[:-40])
    return path


def _pickled(path: Path) -> Path:
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return path


BAD_FILES = {  # name: (make(path) -> path, what the message must say)
    "empty": (lambda p: _write(p, b""), r"tokens\.npy is empty \(0 bytes\)"),
    "text_not_npy": (lambda p: _write(p, b"1 2 3\n4 5 6\n"), r"is not a \.npy file \(it starts with b'1 2 3"),
    "pickled": (_pickled, r"holds pickled Python objects \(dtype object\), which are not loaded"),
    "truncated": (_truncated, r"tokens\.npy is truncated or corrupt"),
    "one_dimensional": (lambda p: _save(p, np.arange(12)), r"must have 2 dimensions, got shape \(12,\)"),
    "no_rows": (lambda p: _save(p, np.zeros((0, 6), np.int32)), r"tokens are empty: shape \(0, 6\)"),
    "float_nan": (lambda p: _save(p, np.array([[0.0, np.nan], [1.0, np.inf]])),
                  r"integer dtype \(token ids\), got float64 holding 2 NaN/Inf value"),
    "float_whole": (lambda p: _save(p, np.ones((4, 3))), r"got float64 \(whole numbers: cast with \.astype"),
    "negative_id": (lambda p: _save(p, np.array([[0, 1], [2, -3]])), r"negative id -3 at index \(1, 1\)"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_data_file_is_named(name, tmp_path, capsys):
    make, pattern = BAD_FILES[name]
    path = make(tmp_path / "tokens.npy")
    assert_error(capsys, runner.main(["di4c-run", f"--data={path}", f"--workdir={tmp_path / 'run'}", *TINY]),
                 pattern)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, pattern", [
    (["--data={tmp}/missing.npy"], r"--data=.*missing\.npy: no such file"),
    (["--data={tmp}/notes.csv"], r"--data=.*notes\.csv: a file that does not end in \.npy"),
    (["--data={tmp}/ok.npy", "--config.data.vocab_size=2"], r"id 2 at index \(0, 2\) is out of range \[0, 2\)"),
    (["--data={tmp}/ok.npy", "--config.data.holdot=0.2"], r"data kind 'npy' has no field\(s\) \['holdot'\]"),
    (["--data={tmp}/ok.npy", "--config.data.holdout=1.5"], r"data\.holdout must be a fraction in \(0, 1\)"),
    (["--data={tmp}/ok.npy", "--tokenizer=char"], r"--tokenizer=char applies to a folder of text files"),
    (["--data={tmp}"], r"holds no file matching '\*\.txt'"),
    (["--data=tfds:imagenet2012"], r"tfds:imagenet2012: no loader for this dataset"),
    (["--config.data.kind=npy", "--config.data.path={tmp}/ok.npy"],
     r"data kind 'npy' has no field\(s\) \['coupling'.*; --data=PATH replaces the config's whole data section"),
], ids=["missing", "not_npy_suffix", "id_above_vocab", "mistyped_data_option", "bad_holdout", "tokenizer_on_npy",
        "folder_without_text", "unknown_tfds", "kind_override_instead_of_data"])
def test_bad_data_argument_is_named(args, pattern, tmp_path, capsys):
    _save(tmp_path / "ok.npy", np.array([[0, 1, 2], [1, 1, 0]] * 10))
    (tmp_path / "notes.csv").write_text("a,b\n")
    argv = [arg.format(tmp=tmp_path) for arg in args]
    assert_error(capsys, runner.main(["di4c-run", *argv, f"--workdir={tmp_path / 'run'}", *TINY]), pattern)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------- the public API
@pytest.fixture(scope="module")
def nets():
    """A tiny teacher (product) and student (mixture) MLP over D = 6 positions, K = 4 (3 tokens + mask)."""
    import jax

    from di4c_jax.models import registry
    from di4c_jax.processes import build_process

    common = dict(num_states=4, num_positions=6, embed_dim=4, hidden=16, num_layers=1, time_dim=8)
    teacher = registry.build_denoiser(registry.model_config("mlp-tiny", **common), jax.random.key(0))
    student = registry.build_denoiser(registry.model_config("mlp-tiny", lam_style="embed", lam_dim=8, **common),
                                      jax.random.key(1))
    return {"teacher": teacher, "student": student, "process": build_process("masked", 3)}


def _apply(nets, x_t, t=None, lam=None, who="teacher"):
    denoiser, params = nets[who]
    return denoiser(params, x_t, np.full((len(x_t),), 0.5, np.float32) if t is None else t, lam)


def _teacher_loss(nets, x0):
    import jax

    from di4c_jax.losses import teacher_loss

    denoiser, params = nets["teacher"]
    return teacher_loss(jax.random.key(0), denoiser=denoiser, params=params, process=nets["process"], x0=x0)


def _di4c_loss(nets, x0):
    import jax

    from di4c_jax.losses import di4c_config, di4c_loss

    (teacher, t_params), (student, s_params) = nets["teacher"], nets["student"]
    return di4c_loss(jax.random.key(0), student=student, student_params=s_params, teacher=teacher,
                     teacher_params=t_params, process=nets["process"], x0=x0, config=di4c_config("tauldr"))


def _sampler(nets, shape=(4, 6), num_steps=2, process=None):
    from di4c_jax.processes import build_process
    from di4c_jax.sampling import SAMPLERS

    process = nets["process"] if process == "same" or process is None else build_process("masked", process)
    return SAMPLERS.get("analytic")(denoiser=nets["teacher"][0], process=process, shape=shape, num_steps=num_steps)


TOKENS = np.zeros((4, 6), np.int32)
API_CASES = {  # name: (call(nets), exception type, what the message must say)
    "apply_float_tokens": (lambda n: _apply(n, TOKENS.astype(np.float32)), TypeError,
                           r"x_t must hold integer token ids, got dtype float32"),
    "apply_rank_1": (lambda n: _apply(n, TOKENS[0]), ValueError, r"x_t must be int\[B, D\], got shape \(6,\)"),
    "apply_wrong_length": (lambda n: _apply(n, TOKENS[:, :5]), ValueError,
                           r"x_t has 5 positions, the model was built for num_positions=6"),
    "apply_id_above_K": (lambda n: _apply(n, np.where(np.eye(4, 6) > 0, 9, 0)), ValueError,
                         r"x_t holds ids outside \[0, 4\): id 9 at index \(0, 0\)"),
    "apply_time_shape": (lambda n: _apply(n, TOKENS, t=np.full((3,), 0.5, np.float32)), ValueError,
                         r"t must be float\[B\] with B=4, got shape \(3,\)"),
    "apply_student_without_lambda": (lambda n: _apply(n, TOKENS, who="student"), ValueError,
                                     r"lam must be float\[B\] for a model built with lambda conditioning"),
    "teacher_loss_float_x0": (lambda n: _teacher_loss(n, TOKENS.astype(np.float64)), TypeError,
                              r"x0 must hold integer token ids"),
    "teacher_loss_negative_id": (lambda n: _teacher_loss(n, np.where(np.eye(4, 6) > 0, -1, 0)), ValueError,
                                 r"x0 holds ids outside \[0, 3\): id -1 at index \(0, 0\)"),
    "di4c_loss_rank_3": (lambda n: _di4c_loss(n, TOKENS[None]), ValueError, r"x0 must be int\[B, D\]"),
    "di4c_loss_id_above_vocab": (lambda n: _di4c_loss(n, TOKENS + 7), ValueError,
                                 r"x0 holds ids outside \[0, 4\): id 7 at index \(0, 0\)"),
    "sampler_shape_rank_1": (lambda n: _sampler(n, shape=(6,)), ValueError,
                             r"shape must be \(batch, num_dims\) with both >= 1, got \(6,\)"),
    "sampler_zero_steps": (lambda n: _sampler(n, num_steps=0), ValueError, r"num_steps must be >= 1, got 0"),
    "sampler_wrong_length": (lambda n: _sampler(n, shape=(4, 5)), ValueError,
                             r"asks for 5 positions, the denoiser was built for num_positions=6"),
    "sampler_other_vocabulary": (lambda n: _sampler(n, process=5), ValueError,
                                 r"the denoiser has K=4 states, the process Masked K=6"),
}


@pytest.mark.parametrize("name", sorted(API_CASES))
def test_public_api_bad_input_is_named(name, nets):
    call, error, pattern = API_CASES[name]
    with pytest.raises(error, match=pattern):
        call(nets)


# ----------------------------------------------------------------------------------------- host token arrays
@pytest.mark.parametrize("tokens, kwargs, pattern", [
    (np.array([[0, 5], [1, 2]]), {"vocab_size": 5}, r"id 5 at index \(0, 1\) is out of range \[0, 5\)"),
    (np.array([[0, -2], [1, 2]]), {}, r"negative id -2 at index \(0, 1\)"),
    (np.array([[0.5, 1.0]]), {}, r"must have an integer dtype \(token ids\), got float64$"),
    (np.array([[True, False]]), {}, r"integer dtype \(token ids\), got bool"),
    (np.array([[0, 1 << 22]]), {}, r"the largest id is 4194304, a vocabulary of 4194305 states"),
], ids=["id_above_vocab", "negative_id", "fractional_floats", "bools", "unindexed_ids"])
def test_host_token_array_is_checked(tokens, kwargs, pattern):
    from di4c_jax.data import array_dataset

    with pytest.raises(ValueError, match=pattern):
        array_dataset(tokens, **kwargs)


def test_pipeline_checks_the_first_batch_against_the_vocabulary():
    from di4c_jax.data import ArraySource, make_iterator

    with pytest.raises(ValueError, match=r"first batch x0: id 3 at index .* out of range \[0, 3\)"):
        make_iterator(ArraySource(np.full((8, 4), 3, np.int32)), global_batch_size=4, seed=0, num_states=3,
                      process_index=0, process_count=1)
