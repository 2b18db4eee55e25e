"""A user's own data: the seeded held-out split, a folder of text files, the `--data` argument, and the runner end
to end on a `.npy` file of tokens (exit 0, the generic metrics for the teacher and student rows)."""
import json

import numpy as np
import pytest

from di4c_jax.data import ArraySource, folder_tokens, holdout_indices, split_source
from experiments import data_arg


def test_holdout_split_is_seeded_disjoint_and_complete():
    train, held = holdout_indices(300, 0.1, seed=0)
    assert len(held) == 30 and len(train) == 270
    np.testing.assert_array_equal(np.sort(np.concatenate([train, held])), np.arange(300))
    np.testing.assert_array_equal(held, holdout_indices(300, 0.1, seed=0)[1])
    assert not np.array_equal(held, holdout_indices(300, 0.1, seed=1)[1])
    assert len(holdout_indices(300, 7, seed=0)[1]) == 7  # a row count
    split = split_source(ArraySource(np.arange(20).reshape(10, 2)), 0.2, seed=5)
    assert split.describe() == "held out 2 of 10 rows (20.0%, seed 5) for evaluation; training on 8"
    assert {int(split.held_out[i]["x0"][0]) // 2 for i in range(2)} == set(split.held_out.indices.tolist())


@pytest.mark.parametrize("holdout, pattern", [(0.0, "fraction in \\(0, 1\\)"), (1.5, "whole number"),
                                              (10, "holds out 10 of 10 rows")])
def test_holdout_errors_name_the_value(holdout, pattern):
    with pytest.raises(ValueError, match=r"data\.holdout.*" + pattern):
        holdout_indices(10, holdout, seed=0)


def test_folder_of_text_files_as_char_tokens(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("abcabcab")
    (tmp_path / "sub" / "b.txt").write_text("cabbage!")
    (tmp_path / "skip.md").write_text("zzzz")
    tokens, tok, num_files = folder_tokens(tmp_path, seq_len=4)
    assert num_files == 2 and tok.chars == "!abceg" and tokens.shape == (4, 4) and tokens.dtype == np.int32
    assert "".join(tok.decode(row) for row in tokens) == "abcabcabcabbage!"
    byte_tokens, byte_tok, _ = folder_tokens(tmp_path, tokenizer="byte", seq_len=8)
    assert byte_tok.vocab_size == 256 and byte_tokens.shape == (2, 8)
    with pytest.raises(ValueError, match=r"holds no file matching '\*\.csv'"):
        folder_tokens(tmp_path, pattern="*.csv")


def test_data_argument_forms(tmp_path):
    path = tmp_path / "tokens.npy"
    np.save(path, np.zeros((4, 2), np.int32))
    assert data_arg.data_section(str(path)) == {"kind": "npy", "path": str(path)}
    assert data_arg.data_section("tfds:digits") == {"kind": "tfds", "name": "digits", "split": "train"}
    assert data_arg.data_section("tfds:mnist:test")["split"] == "test"
    assert data_arg.data_section(str(tmp_path), "byte") == {"kind": "text_folder", "path": str(tmp_path),
                                                             "tokenizer": "byte"}
    assert data_arg.label(data_arg.data_section(str(path))) == "tokens.npy"


@pytest.mark.slow
def test_runner_on_a_npy_file_of_tokens(tmp_path, capsys):
    """300 x 6 tokens over 3 symbols (a sticky Markov chain) through `--data`: exit 0, the held-out split stated,
    the table printed, results.json with the generic metrics of every teacher and student row."""
    from _tiny_cli import TINY

    from experiments import run as runner

    rng = np.random.default_rng(0)
    tokens = np.zeros((300, 6), np.int64)
    tokens[:, 0] = rng.integers(0, 3, 300)
    for d in range(1, 6):
        tokens[:, d] = np.where(rng.random(300) < 0.7, tokens[:, d - 1], rng.integers(0, 3, 300))
    np.save(tmp_path / "tokens.npy", tokens)
    workdir = tmp_path / "run"
    status = runner.main(["di4c-run", f"--data={tmp_path / 'tokens.npy'}", f"--workdir={workdir}", *TINY])
    out = capsys.readouterr().out
    print(out)  # the table, for the README (pytest -s)
    assert status == 0
    assert "held out 30 of 300 rows (10.0%, seed 0)" in out and "| teacher | 2 |" in out and "| student | 2 |" in out
    assert f"plot (tv against NFE): {workdir / 'results.png'}" in out
    assert (workdir / "results.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((workdir / "results.json").read_text())
    assert results["experiment"] == "tokens.npy (quickstart config)"
    assert results["reference"]["heldout_rows"] == 30 and results["reference"]["joint_states"] == "3^6"
    assert {r["model"] for r in results["rows"]} == {"teacher", "student"}
    for row in results["rows"]:
        assert 0.0 <= row["tv"] <= 1.0 and 0.0 < row["tv_noise_floor"] < 1.0
        assert 0.0 < row["heldout_nelbo_per_token"] < 3.0 and row["unigram_entropy"] >= 0.0


def test_npy_tokens_with_class_labels(tmp_path):
    from di4c_jax.data import npy_dataset

    np.save(tmp_path / "tokens.npy", np.arange(12, dtype=np.int32).reshape(4, 3) % 5)
    np.save(tmp_path / "labels.npy", np.array([0, 2, 1, 2], np.int64))
    source, info = npy_dataset(tmp_path / "tokens.npy", labels_path=tmp_path / "labels.npy")
    assert info.num_classes == 3 and int(source[1]["label"]) == 2 and info.vocab_size == 5
    np.save(tmp_path / "bad.npy", np.zeros((4, 2), np.int32))
    with pytest.raises(ValueError, match="labels must be int\\[num\\], got shape \\(4, 2\\)"):
        npy_dataset(tmp_path / "tokens.npy", labels_path=tmp_path / "bad.npy")
    np.save(tmp_path / "short.npy", np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="got 3 labels for 4 examples"):
        npy_dataset(tmp_path / "tokens.npy", labels_path=tmp_path / "short.npy")
