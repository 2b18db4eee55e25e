"""Text documents from a folder, Hugging Face `datasets` or tfds, tokenised through grain and packed into MDLM's
wrapped blocks (`packing.wrapped_blocks`) in a `.npy` file read back by `PackedSource`.

OpenWebText as MDLM splits it (kuleshov-group/mdlm:dataloader.py, `get_dataset`): train = 'train[:-100000]',
validation = 'train[-100000:]' of the Hugging Face 'openwebtext' dataset, no detokenizer, GPT-2 tokens, wrap=True,
blocks of 1024. `datasets` and `tensorflow_datasets` are imported only when used.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grain
import numpy as np

from di4c_jax.data.packing import PackedSource, write_blocks, wrapped_blocks
from di4c_jax.data.sources import DataInfo

OWT_SPLITS = {"train": "train[:-100000]", "validation": "train[-100000:]"}


class FolderDocuments:
    """Every file below `path` matching `pattern` (recursive, sorted by relative path) is one document (UTF-8,
    invalid bytes replaced)."""

    def __init__(self, path: str | os.PathLike, pattern: str = "*.txt"):
        root = Path(path)
        if not root.is_dir():
            raise NotADirectoryError(f"text folder {root}: no such directory")
        self.files = sorted((p for p in root.rglob(pattern) if p.is_file()),
                            key=lambda p: p.relative_to(root).as_posix())
        if not self.files:
            raise ValueError(f"text folder {root} holds no file matching {pattern!r} (set data.pattern, e.g. '*.md')")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> str:
        return self.files[index].read_bytes().decode("utf-8", errors="replace")


class RecordDocuments:
    """The `field` of each record of a random-access record source (bytes decoded as UTF-8)."""

    def __init__(self, records: Any, field: str = "text", *, name: str = "records"):
        self.records, self.field, self.name = records, field, name

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> str:
        record = self.records[index]
        if self.field not in record:
            raise KeyError(f"{self.name}: record {index} has no field {self.field!r} (fields: {sorted(record)})")
        text = record[self.field]
        return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)


def hf_documents(name: str, split: str = "train", *, config: str | None = None, field: str = "text",
                 cache_dir: str | os.PathLike | None = None) -> RecordDocuments:
    """`datasets.load_dataset(name, config, split=split)` as documents (its own cache; downloads if allowed)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(f"Hugging Face dataset {name!r} needs the `datasets` package: pip install datasets") from None
    records = datasets.load_dataset(name, config, split=split, cache_dir=None if cache_dir is None else str(cache_dir))
    return RecordDocuments(records, field, name=f"hf:{name}:{split}")


def tfds_documents(name: str, split: str = "train", *, field: str = "text",
                   data_dir: str | os.PathLike | None = None, download: bool = False) -> RecordDocuments:
    """A prepared tfds text dataset (ArrayRecord, `tfds.data_source`) as documents."""
    try:
        from di4c_jax.data.tfds_sources import data_source
    except ImportError:
        raise ImportError(f"tfds dataset {name!r} needs tensorflow-datasets: pip install tensorflow-datasets") from None
    return RecordDocuments(data_source(name, split, data_dir, download), field, name=f"tfds:{name}:{split}")


def _encode_slice(start: int, *, documents, tokenizer, size: int) -> list[np.ndarray]:
    texts = [documents[i] for i in range(start, min(start + size, len(documents)))]
    return tokenizer.encode_batch(texts)


def tokenized_documents(documents, tokenizer, *, docs_per_batch: int = 256,
                        num_threads: int = 4) -> Iterator[np.ndarray]:
    """int32[L_i] token ids of every document, in order, without special tokens: grain reads and tokenises
    `docs_per_batch` documents per element on `num_threads` threads."""
    encode = functools.partial(_encode_slice, documents=documents, tokenizer=tokenizer, size=docs_per_batch)
    dataset = grain.MapDataset.range(0, len(documents), docs_per_batch).map(encode)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * max(num_threads, 1))
    for ids in dataset.to_iter_dataset(options):
        yield from ids


def tokenizer_digest(tokenizer) -> str:
    """8 hex digits of the tokenizer file's SHA-256 (what a packed cache was built with)."""
    return hashlib.sha256(Path(tokenizer.path).read_bytes()).hexdigest()[:8]


def cache_file(folder: str | os.PathLike, name: str, tokenizer, seq_len: int) -> Path:
    """MDLM-style cache name: <name>_bs<L>_wrapped_<tokenizer digest>.npy, non-alphanumerics as '_'."""
    stem = re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_")
    return Path(folder) / f"{stem}_bs{seq_len}_wrapped_{tokenizer_digest(tokenizer)}.npy"


def wrapped_dataset(documents, tokenizer, cache_path: str | os.PathLike, *, seq_len: int = 1024,
                    docs_per_group: int | None = None, num_threads: int = 4,
                    name: str = "text") -> tuple[PackedSource, DataInfo]:
    """(PackedSource of int32[seq_len] blocks, DataInfo); the blocks are packed into `cache_path` on first use
    and read from it afterwards (delete the file to rebuild). vocab_size is the tokenizer's (the masked process
    adds the mask id).

    documents: random-access texts, or a function returning them (called only when the cache is missing).
    """
    cache_path = Path(cache_path)
    if not cache_path.is_file():
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        docs = tokenized_documents(documents() if callable(documents) else documents, tokenizer,
                                   num_threads=num_threads)
        blocks = wrapped_blocks(docs, seq_len=seq_len, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
                                docs_per_group=docs_per_group)
        write_blocks(blocks, cache_path, seq_len=seq_len, vocab_size=tokenizer.vocab_size)
    source = PackedSource(cache_path)
    if len(source) == 0 or source[0]["x0"].shape != (seq_len,):
        raise ValueError(f"{cache_path}: {len(source)} block(s); expected at least one of length {seq_len} (too "
                         f"little text for seq_len={seq_len}, or a cache built with another seq_len: delete it)")
    info = DataInfo(name=name, vocab_size=tokenizer.vocab_size, shape=(seq_len,), decode=tokenizer.decode)
    return source, info
