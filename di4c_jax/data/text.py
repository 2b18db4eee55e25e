"""Offline text corpus: the Python standard library's own `*.py` sources, chunked into fixed-length sequences.

Files are all `*.py` below the directory of the `os` module (site-/dist-packages, `__pycache__` and, by default,
the stdlib's own test suites excluded), sorted by relative path. The split is by file: a file goes to 'test' when
crc32(relative path) % 20 == 0, so it is deterministic for a given Python version. Each split's files are
concatenated and cut into non-overlapping chunks of `seq_len` tokens (the last partial chunk is dropped).
"""
import os
import pathlib
import zlib

import numpy as np

from di4c_jax.data.sources import ArraySource, DataInfo
from di4c_jax.data.tokenizers import ByteTokenizer, CharTokenizer

PYSTDLIB_TEST_EVERY = 20
_SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
_TEST_DIRS = frozenset({"test", "tests", "idle_test"})


def pystdlib_files(*, exclude_tests: bool = True, root: str | os.PathLike | None = None) -> list[pathlib.Path]:
    """Sorted `*.py` paths of the standard library (root defaults to the directory of the `os` module)."""
    root = pathlib.Path(root if root is not None else os.path.dirname(os.__file__))
    skipped = _SKIPPED_DIRS | (_TEST_DIRS if exclude_tests else frozenset())
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in skipped]
        files.extend(pathlib.Path(directory, n) for n in names if n.endswith(".py"))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def is_test_file(path: pathlib.Path, root: pathlib.Path) -> bool:
    """The split rule: crc32 of the relative POSIX path, every 20th bucket is 'test'."""
    return zlib.crc32(path.relative_to(root).as_posix().encode()) % PYSTDLIB_TEST_EVERY == 0


def chunk_tokens(ids: np.ndarray, seq_len: int) -> np.ndarray:
    """int[L] -> int32[L // seq_len, seq_len], dropping the tail."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    num = len(ids) // seq_len
    return np.asarray(ids[: num * seq_len], np.int32).reshape(num, seq_len)


def pystdlib_tokens(
    split: str = "train",
    *,
    seq_len: int = 256,
    tokenizer: str = "byte",
    max_files: int | None = None,
    exclude_tests: bool = True,
    root: str | os.PathLike | None = None,
) -> tuple[np.ndarray, ByteTokenizer | CharTokenizer]:
    """Returns (tokens int32[num, seq_len], tokenizer).

    tokenizer: 'byte' (raw file bytes, vocab 256) or 'char' (files decoded as UTF-8 with replacement; vocabulary =
      sorted distinct characters of all selected files of both splits, so train and test share it).
    max_files: keep only the first `max_files` files (sorted order) before splitting; for quick tests.
    """
    if split not in ("train", "test"):
        raise ValueError(f"pystdlib_text split must be 'train' or 'test', got {split!r}")
    if tokenizer not in ("byte", "char"):
        raise ValueError(f"tokenizer must be 'byte' or 'char', got {tokenizer!r}")
    root = pathlib.Path(root if root is not None else os.path.dirname(os.__file__))
    files = pystdlib_files(exclude_tests=exclude_tests, root=root)[:max_files]
    want_test = split == "test"
    chosen = [p for p in files if is_test_file(p, root) == want_test]
    if not chosen:
        raise ValueError(f"no files for split {split!r} among {len(files)} stdlib files under {root}")
    if tokenizer == "byte":
        tok = ByteTokenizer()
        ids = tok.encode(b"".join(p.read_bytes() for p in chosen))
    else:
        texts = {p: p.read_bytes().decode("utf-8", errors="replace") for p in files}
        tok = CharTokenizer.fit("".join(texts.values()))
        ids = tok.encode("".join(texts[p] for p in chosen))
    return chunk_tokens(ids, seq_len), tok


def pystdlib_dataset(split: str = "train", **kwargs) -> tuple[ArraySource, DataInfo]:
    """`pystdlib_tokens` wrapped as a source; `info.decode` maps int[D] back to text."""
    tokens, tok = pystdlib_tokens(split, **kwargs)
    if len(tokens) == 0:
        raise ValueError(f"pystdlib_text split {split!r} is shorter than one sequence; lower seq_len")
    info = DataInfo(name="pystdlib_text", vocab_size=tok.vocab_size, shape=(tokens.shape[1],), decode=tok.decode)
    return ArraySource(tokens), info


def folder_tokens(
    path: str | os.PathLike, *, tokenizer: str = "char", seq_len: int = 64, pattern: str = "*.txt",
    wrap: bool | None = None,
) -> tuple[np.ndarray, ByteTokenizer | CharTokenizer, int]:
    """A user's folder of text files as (tokens int32[num, seq_len], tokenizer, number of files).

    Files: every regular file below `path` matching `pattern` (recursive, sorted by relative path). tokenizer:
    'char' (files decoded as UTF-8 with replacement; vocabulary = the folder's distinct characters, sorted), 'byte'
    (vocab 256) or 'bpe:PATH' (a Hugging Face tokenizer.json, e.g. GPT-2's).
    wrap: each file is a document packed as MDLM does (`packing.wrapped_blocks`: EOS after each file, blocks
      [BOS] + seq_len - 2 tokens + [EOS]); needs a tokenizer with BOS/EOS ids, so it defaults to True for 'bpe:'
      and False otherwise. Without wrapping the files are concatenated and cut into non-overlapping chunks of
      `seq_len` tokens. Either way the tail is dropped.
    """
    from di4c_jax.data.documents import FolderDocuments, tokenized_documents
    from di4c_jax.data.packing import pack_documents
    from di4c_jax.data.tokenizers import check_tokenizer_spec, load_bpe

    check_tokenizer_spec(tokenizer)
    bpe = tokenizer.startswith("bpe:")
    wrap = bpe if wrap is None else wrap
    if wrap and not bpe:
        raise ValueError(f"wrap=True needs a tokenizer with BOS/EOS ids (bpe:PATH), not {tokenizer!r}")
    docs = FolderDocuments(path, pattern)
    if bpe:
        tok = load_bpe(tokenizer)
        ids_per_file = list(tokenized_documents(docs, tok, num_threads=0))
        if wrap:
            tokens = pack_documents(ids_per_file, seq_len=seq_len, bos_id=tok.bos_id, eos_id=tok.eos_id)
        else:
            tokens = chunk_tokens(np.concatenate(ids_per_file), seq_len)
        total = sum(len(ids) for ids in ids_per_file)
    else:
        data = b"".join(p.read_bytes() for p in docs.files)
        if tokenizer == "byte":
            tok, ids = ByteTokenizer(), ByteTokenizer().encode(data)
        else:
            text = data.decode("utf-8", errors="replace")
            tok = CharTokenizer.fit(text)
            ids = tok.encode(text)
        tokens, total = chunk_tokens(ids, seq_len), len(ids)
    if len(tokens) < 2:
        raise ValueError(f"text folder {path}: {total} tokens in {len(docs)} file(s) make {len(tokens)} "
                         f"sequence(s) of seq_len={seq_len}; need at least 2 (lower data.seq_len or add text)")
    return tokens, tok, len(docs)
