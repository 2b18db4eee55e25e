"""GPT-2-style BPE from a local tokenizer.json (a tiny one trained on stdlib sources) and MDLM's wrapped blocks:
round trip, `--tokenizer bpe:PATH`, blocks of L = [BOS] + stream + [EOS], the packed .npy file and its source."""
import numpy as np
import pytest

from _tiny_bpe import stdlib_texts, train_tiny_bpe
from di4c_jax.data import bpe, documents, packing, tokenizers
from di4c_jax.data.text import folder_tokens
from experiments import data_arg


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    return train_tiny_bpe(tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def tok(tok_path):
    return bpe.BPETokenizer(tok_path)


def test_round_trip_and_special_ids(tok, tok_path):
    assert tok.vocab_size == 400 and tok.eos_id == tok.bos_id == 399  # EOS last, as GPT-2's 50256
    for text in stdlib_texts():
        ids = tok.encode(text)
        assert ids.dtype == np.int32 and ids.max() < tok.vocab_size and len(ids) < len(text)
        assert tok.decode(ids) == text
    assert tok.encode("a<|endoftext|>b").tolist()[1] == tok.eos_id
    assert tok.decode_batch([tok.encode("x = 1"), tok.encode("def f():")]) == ["x = 1", "def f():"]
    assert tok.decode(tok.encode("it 's here ."), clean_up_spaces=True) == "it's here."
    assert bpe.BPETokenizer(tok_path.parent).vocab_size == 400  # a folder holding tokenizer.json
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 400\), got 400 at position 1"):
        tok.decode([5, 400])


def test_bpe_errors_name_the_file(tmp_path, tok_path):
    with pytest.raises(FileNotFoundError, match=r"nope/tokenizer.json: no such file; expected a Hugging Face"):
        bpe.BPETokenizer(tmp_path / "nope" / "tokenizer.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match=r"bad.json: not a readable Hugging Face tokenizer.json"):
        bpe.BPETokenizer(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=r"token '<s>' is not in the vocabulary"):
        bpe.BPETokenizer(tok_path, eos_token="<s>")
    with pytest.raises(ValueError, match=r"unknown tokenizer 'gpt2'; expected 'char', 'byte' or 'bpe:PATH'"):
        tokenizers.check_tokenizer_spec("gpt2")
    assert tokenizers.check_tokenizer_spec(f"bpe:{tok_path}") == f"bpe:{tok_path}"


def test_tokenizer_flag_on_a_folder(tmp_path, tok_path):
    section = data_arg.data_section(str(tmp_path), f"bpe:{tok_path}")
    assert section == {"kind": "text_folder", "path": str(tmp_path), "tokenizer": f"bpe:{tok_path}"}
    with pytest.raises(FileNotFoundError, match=r"missing.json: no such file"):
        data_arg.data_section(str(tmp_path), f"bpe:{tmp_path}/missing.json")
    with pytest.raises(ValueError, match=r"unknown tokenizer 'word'"):
        data_arg.data_section(str(tmp_path), "word")


def _docs(tok):
    return [tok.encode(t) for t in stdlib_texts()]


def test_wrapped_blocks_are_the_stream_between_bos_and_eos(tok):
    docs, seq_len = _docs(tok), 64
    blocks = packing.pack_documents(docs, seq_len=seq_len, bos_id=tok.bos_id, eos_id=tok.eos_id)
    stream = np.concatenate([np.append(d, tok.eos_id) for d in docs])
    assert blocks.shape == (len(stream) // (seq_len - 2), seq_len) and blocks.dtype == np.int32
    assert (blocks[:, 0] == tok.bos_id).all() and (blocks[:, -1] == tok.eos_id).all()
    bodies = blocks[:, 1:-1].reshape(-1)
    np.testing.assert_array_equal(bodies, stream[:len(bodies)])  # the concatenation is a prefix of the stream
    ends = np.cumsum([len(d) + 1 for d in docs]) - 1  # separators where documents end
    assert (stream[ends] == tok.eos_id).all() and (bodies == tok.eos_id).sum() == (ends < len(bodies)).sum()
    again = packing.pack_documents(docs, seq_len=seq_len, bos_id=tok.bos_id, eos_id=tok.eos_id)
    np.testing.assert_array_equal(blocks, again)
    per_doc = packing.pack_documents(docs, seq_len=seq_len, bos_id=tok.bos_id, eos_id=tok.eos_id, docs_per_group=1)
    assert len(per_doc) == sum((len(d) + 1) // (seq_len - 2) for d in docs)  # MDLM's per-map-batch remainder
    with pytest.raises(ValueError, match="seq_len must be >= 3"):
        packing.pack_documents(docs, seq_len=2, bos_id=0, eos_id=0)


def test_packed_file_through_grain(tmp_path, tok):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, text in enumerate(stdlib_texts()):
        (folder / f"{i}.txt").write_text(text)
    docs = documents.FolderDocuments(folder)
    cache = documents.cache_file(tmp_path / "cache", "folder:train", tok, 128)
    assert cache.name.startswith("folder_train_bs128_wrapped_")
    source, info = documents.wrapped_dataset(docs, tok, cache, seq_len=128, num_threads=2)
    expected = packing.pack_documents(_docs(tok), seq_len=128, bos_id=tok.bos_id, eos_id=tok.eos_id)
    assert len(source) == len(expected) and np.load(cache, mmap_mode="r").dtype == np.uint16
    np.testing.assert_array_equal(np.stack([source[i]["x0"] for i in range(len(source))]), expected)
    assert info.vocab_size == 400 and info.shape == (128,) and info.decode(source[0]["x0"][1:4])
    from di4c_jax.data import make_iterator

    batch = next(make_iterator(source, global_batch_size=4, seed=0, process_index=0, process_count=1,
                               num_states=info.vocab_size))
    assert batch["x0"].shape == (4, 128) and batch["x0"].dtype == np.int32
    tokens, folder_tok, num_files = folder_tokens(folder, tokenizer=f"bpe:{tok.path}", seq_len=128)
    assert num_files == 4 and folder_tok.vocab_size == 400
    np.testing.assert_array_equal(tokens, expected)
    with pytest.raises(ValueError, match=r"wrap=True needs a tokenizer with BOS/EOS ids"):
        folder_tokens(folder, tokenizer="char", wrap=True)


def test_text_dataset_argument_and_its_data_kind(tmp_path, tok_path, monkeypatch):
    """`--data=hf:NAME:split --tokenizer=bpe:PATH` -> the 'wrapped_text' kind, built (the Hugging Face loader
    replaced by stdlib texts) into cached blocks with a held-out split."""
    spec = "hf:openwebtext:train[:-100000]"
    section = data_arg.data_section(spec, f"bpe:{tok_path}")
    assert section == {"kind": "wrapped_text", "source": "hf", "name": "openwebtext", "split": "train[:-100000]",
                       "tokenizer": f"bpe:{tok_path}"}
    assert data_arg.label(section) == spec
    assert data_arg.data_section("tfds:lm1b", f"bpe:{tok_path}")["source"] == "tfds"
    assert data_arg.data_section("tfds:lm1b") == {"kind": "tfds", "name": "lm1b", "split": "train"}
    with pytest.raises(ValueError, match=r"hf:openwebtext: a text dataset needs --tokenizer=bpe:PATH.*no --tok"):
        data_arg.data_section("hf:openwebtext")
    with pytest.raises(ValueError, match=r"needs --tokenizer=bpe:PATH.*got --tokenizer=char"):
        data_arg.data_section("tfds:lm1b", "char")

    from experiments import setup

    calls = []
    monkeypatch.setattr(documents, "hf_documents", lambda name, split, **kw: calls.append(split) or stdlib_texts())
    options = setup.WrappedTextData(**{k: v for k, v in section.items() if k != "kind"}, seq_len=64, holdout=2)
    bundle = setup.DATA_KINDS.get("wrapped_text").build(options, tmp_path)
    assert calls == ["train[:-100000]"] and bundle.info.vocab_size == 400 and bundle.info.shape == (64,)
    assert len(bundle.held_out) == 2 and len(bundle.train) > 100 and bundle.train[0]["x0"][0] == 399
    assert list((tmp_path / "data").glob("hf_openwebtext_train_-100000_bs64_wrapped_*.npy"))
    setup.DATA_KINDS.get("wrapped_text").build(options, tmp_path)
    assert calls == ["train[:-100000]"]  # the second build reads the cache


def test_optional_dataset_packages_are_named(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(ImportError, match=r"'openwebtext' needs the `datasets` package: pip install datasets"):
        documents.hf_documents("openwebtext", "train")


def test_text_folder_kind_with_bpe(tmp_path, tok_path):
    """The runner's 'text_folder' kind with --tokenizer=bpe:PATH: wrapped blocks, the masked process's K = V + 1."""
    from di4c_jax.processes import build_process
    from experiments import setup

    for i, text in enumerate(stdlib_texts()):
        (tmp_path / f"{i}.txt").write_text(text)
    section = {k: v for k, v in data_arg.data_section(str(tmp_path), f"bpe:{tok_path}").items() if k != "kind"}
    bundle = setup.DATA_KINDS.get("text_folder").build(setup.TextFolderData(**section, seq_len=64, holdout=3),
                                                       tmp_path)
    assert bundle.info.name == f"{tmp_path.name}/ (4 files, BPE tokens)" and bundle.info.vocab_size == 400
    assert len(bundle.held_out) == 3 and bundle.train[0]["x0"][0] == bundle.train[0]["x0"][-1] == 399
    assert build_process("masked", bundle.info.vocab_size).num_states == 401
