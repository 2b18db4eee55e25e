"""Data pipeline: validation, user arrays / .npy, tokenizers, the stdlib text corpus, grain order and checkpoints."""
import os
import pathlib
import re

import grain
import numpy as np
import pytest

from di4c_jax.data import (
    ArraySource,
    ByteTokenizer,
    CharTokenizer,
    array_dataset,
    load_dataset,
    make_iterator,
    pystdlib_tokens,
    validate_tokens,
)
from di4c_jax.data.text import is_test_file, pystdlib_files

D = 5


def id_source(num: int) -> ArraySource:
    """Example i has x0 = [i % 7, ...] in a vocab of 7 and its id recoverable from the label (label = i)."""
    x0 = np.repeat((np.arange(num) % 7)[:, None], D, axis=1)
    return ArraySource(x0, labels=np.arange(num))


def take_ids(iterator, num_batches: int) -> np.ndarray:
    """int[num_batches, b]: the example ids (labels) of the next batches."""
    return np.stack([next(iterator)["label"] for _ in range(num_batches)])


# --- validation and user arrays ---------------------------------------------------------------------------------


def test_validate_tokens_names_position_and_value():
    x = np.zeros((3, 4), np.int32)
    validate_tokens(x, 1)
    x[2, 1] = 9
    with pytest.raises(ValueError, match=re.escape("id 9 at index (2, 1)")):
        validate_tokens(x, 9)
    x[2, 1] = -1
    with pytest.raises(ValueError, match=re.escape("id -1 at index (2, 1)")):
        validate_tokens(x, 9)


def test_npy_vocab_inference_and_given_vocab(tmp_path):
    x = np.array([[0, 3, 1], [2, 2, 4]], np.int64)
    path = tmp_path / "toks.npy"
    np.save(path, x)
    source, info = load_dataset(str(path))
    assert info.vocab_size == 5 and info.shape == (3,) and info.num_classes == 0 and len(source) == 2
    assert source[1]["x0"].dtype == np.int32 and source[1]["x0"].tolist() == [2, 2, 4]
    assert "label" not in source[0]
    _, info = load_dataset(path, vocab_size=8)
    assert info.vocab_size == 8
    with pytest.raises(ValueError, match=r"vocab_size=4.*id 4 at index \(1, 2\)"):
        load_dataset(path, vocab_size=4)


def test_npy_rejects_bad_arrays(tmp_path):
    cases = {
        "float.npy": (np.zeros((2, 3), np.float32), "integer dtype"),
        "flat.npy": (np.zeros(6, np.int32), "2 dimensions"),
        "cube.npy": (np.zeros((2, 3, 4), np.int32), "2 dimensions"),
        "neg.npy": (np.array([[0, 1], [-3, 1]]), re.escape("id -3 at index (1, 0)")),
    }
    for name, (array, message) in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(ValueError, match=message):
            load_dataset(tmp_path / name)
    with pytest.raises(ValueError, match="only the 'train' split"):
        load_dataset(tmp_path / "neg.npy", "test")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")


def test_int_array_hook_with_labels():
    x = np.arange(12).reshape(4, 3) % 6
    source, info = load_dataset(x, labels=np.array([0, 2, 1, 2]), name="synthetic")
    assert (info.name, info.vocab_size, info.num_classes) == ("synthetic", 6, 3)
    assert source[3]["label"] == 2 and source[3]["x0"].tolist() == x[3].tolist()
    with pytest.raises(ValueError, match="labels"):
        array_dataset(x, labels=np.array([0, 1]))


# --- tokenizers and the stdlib corpus ------------------------------------------------------------------------------


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "def f(x):\n    return 'naïve ✓'\n"
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and len(ids) == len(text.encode()) and ids.max() < 256
    assert tok.decode(ids) == text
    assert tok.decode(np.concatenate([ids, np.zeros(4, np.int32)])) == text  # padding dropped
    with pytest.raises(ValueError, match="byte ids"):
        tok.decode(np.array([256]))


def test_char_tokenizer_round_trip():
    text = "hello wörld\n"
    tok = CharTokenizer.fit(text)
    assert tok.chars == "".join(sorted(set(text))) and tok.vocab_size == 10
    ids = tok.encode("world hello")
    assert ids.max() < tok.vocab_size and tok.decode(ids) == "world hello"
    with pytest.raises(ValueError, match=re.escape("character 'z' at position 2")):
        tok.encode("hoz")
    with pytest.raises(ValueError, match="sorted"):
        CharTokenizer("ba")


def test_pystdlib_byte_corpus_matches_files():
    tokens, tok = pystdlib_tokens("train", seq_len=64, tokenizer="byte", max_files=40)
    assert tokens.dtype == np.int32 and tokens.ndim == 2 and tokens.shape[1] == 64 and len(tokens) > 10
    assert tokens.min() >= 0 and tokens.max() < tok.vocab_size == 256
    files = pystdlib_files()[:40]
    root = pathlib.Path(os.__file__).parent
    train_bytes = b"".join(p.read_bytes() for p in files if not is_test_file(p, root))
    assert len(tokens) == len(train_bytes) // 64
    assert tok.decode(tokens[:3].reshape(-1)) == train_bytes[: 3 * 64].decode("utf-8", errors="replace")


def test_pystdlib_char_corpus_shares_vocab_across_splits():
    train, tok_train = pystdlib_tokens("train", seq_len=32, tokenizer="char", max_files=60)
    test, tok_test = pystdlib_tokens("test", seq_len=32, tokenizer="char", max_files=60)
    assert tok_train == tok_test and "\n" in tok_train.chars and "d" in tok_train.chars
    assert train.max() < tok_train.vocab_size and test.max() < tok_train.vocab_size and len(test) > 0
    assert tok_train.decode(tok_train.encode(tok_train.decode(train[0]))) == tok_train.decode(train[0])


def test_load_dataset_pystdlib_info():
    source, info = load_dataset("pystdlib_text", "test", seq_len=48, max_files=80)
    assert info.vocab_size == 256 and info.shape == (48,) and info.num_classes == 0
    assert source[0]["x0"].shape == (48,) and isinstance(info.decode(source[0]["x0"]), str)


# --- grain pipeline -----------------------------------------------------------------------------------------------


def test_same_seed_same_order_and_different_seed_differs():
    source = id_source(64)
    kw = dict(global_batch_size=8, process_index=0, process_count=1)
    a = take_ids(make_iterator(source, seed=3, **kw), 6)
    b = take_ids(make_iterator(source, seed=3, **kw), 6)
    c = take_ids(make_iterator(source, seed=4, **kw), 6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_epochs_are_reshuffled_permutations():
    ids = take_ids(make_iterator(id_source(40), global_batch_size=8, seed=0, num_epochs=2, process_count=1,
                                 process_index=0), 10)
    first, second = ids[:5].reshape(-1), ids[5:].reshape(-1)
    assert sorted(first) == sorted(second) == list(range(40))
    assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(40))


def test_finite_epochs_stop_and_drop_remainder():
    iterator = make_iterator(id_source(20), global_batch_size=6, seed=0, num_epochs=1)  # jax's 1 process
    batches = list(iterator)
    assert len(batches) == 3 and all(b["x0"].shape == (6, D) and b["x0"].dtype == np.int32 for b in batches)


@pytest.mark.parametrize("num, global_batch, process_count", [(96, 8, 4), (103, 20, 4), (30, 6, 2)])
def test_hosts_read_their_rows_of_the_one_process_global_batches(num, global_batch, process_count):
    """Whatever the number of processes, the per-host batches stacked in process order are the 1-process batches
    (across epoch boundaries), and each global batch's per-host slices are disjoint."""
    steps = 2 * num // global_batch + 1
    kw = dict(global_batch_size=global_batch, seed=1)
    single = take_ids(make_iterator(id_source(num), **kw, process_index=0, process_count=1), steps)
    hosts = [take_ids(make_iterator(id_source(num), **kw, process_index=p, process_count=process_count), steps)
             for p in range(process_count)]
    assert all(h.shape == (steps, global_batch // process_count) for h in hosts)
    np.testing.assert_array_equal(np.concatenate(hosts, axis=1), single)
    first_epoch = single[: num // global_batch]  # later batches may straddle an epoch boundary
    assert len(set(first_epoch.ravel())) == first_epoch.size


def test_no_shuffle_reads_the_hosts_rows_in_order():
    iterator = make_iterator(id_source(12), global_batch_size=4, seed=0, shuffle=False, process_index=1,
                             process_count=2)
    np.testing.assert_array_equal(take_ids(iterator, 4), [[2, 3], [6, 7], [10, 11], [2, 3]])


def test_iterator_state_restores_exact_position():
    kw = dict(global_batch_size=6, seed=7, process_index=0, process_count=1)
    source = id_source(50)
    reference = make_iterator(source, **kw)
    take_ids(reference, 5)
    state = reference.get_state()
    expected = take_ids(reference, 12)  # crosses an epoch boundary (50 examples / 6 per batch)
    resumed = make_iterator(source, **kw)
    resumed.set_state(state)
    np.testing.assert_array_equal(take_ids(resumed, 12), expected)


def test_iterator_checkpoint_through_orbax(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    kw = dict(global_batch_size=4, seed=2, process_index=0, process_count=1)
    source = id_source(30)
    iterator = make_iterator(source, **kw)
    take_ids(iterator, 3)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
        manager.wait_until_finished()
        expected = take_ids(iterator, 9)
        resumed = make_iterator(source, **kw)
        manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
    np.testing.assert_array_equal(take_ids(resumed, 9), expected)


def test_first_batch_validation_and_argument_errors():
    source = id_source(16)  # ids 0..6
    make_iterator(source, global_batch_size=4, seed=0, shuffle=False, process_count=1, process_index=0,
                  num_states=7)
    with pytest.raises(ValueError, match=r"first batch x0: id 6 at index \(6, 0\)"):
        make_iterator(source, global_batch_size=8, seed=0, shuffle=False, process_count=1, process_index=0,
                      num_states=6)
    with pytest.raises(ValueError, match="multiple of process_count"):
        make_iterator(source, global_batch_size=6, seed=0, process_count=4, process_index=0)
    with pytest.raises(ValueError, match="fewer than the global batch size"):
        make_iterator(source, global_batch_size=32, seed=0, process_count=1, process_index=0)
    with pytest.raises(ValueError, match="process_index"):
        make_iterator(source, global_batch_size=4, seed=0, process_count=2, process_index=2)
