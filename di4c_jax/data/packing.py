"""MDLM's wrapped text: documents tokenised, each followed by EOS, concatenated, and cut into blocks of L tokens,
each block = [BOS] + the next L - 2 tokens of the stream + [EOS]; the remainder is dropped.

This is `wrap=True` in kuleshov-group/mdlm:dataloader.py (`get_dataset` appends EOS to every document,
`_group_texts` adds BOS and EOS around chunks of block_size - 2); SDTT and Di4C train on the same blocks of 1024
(`legacy_start_end_bos`, `_group_texts` of SDTT's legacy_dataloader.py, jdeschena/sdtt). For GPT-2, BOS = EOS = 50256.

Blocks are written once to a `.npy` file (uint16 ids when the vocabulary fits) and read back memory-mapped by
`PackedSource`, a random-access source for the grain pipeline (`data.pipeline.make_iterator`).
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from di4c_jax.data.sources import NPY_MAGIC

NPY_HEADER_BYTES = 128  # reserved at the start of a packed file; the final shape is written into it at the end


def wrapped_blocks(documents: Iterable[np.ndarray], *, seq_len: int, bos_id: int, eos_id: int,
                   docs_per_group: int | None = None) -> Iterator[np.ndarray]:
    """Yields int32[seq_len] blocks [BOS] + stream[i * (L-2) : (i+1) * (L-2)] + [EOS], where stream is the
    concatenation of `doc + [EOS]` over the documents (each int[L_doc], already tokenised without special tokens).

    docs_per_group: None packs the whole stream and drops one remainder at the end. MDLM packs inside each
      `datasets.map(batched=True)` call, 1000 documents by default, so it drops a remainder every 1000 documents
      (counted from the start of each worker's shard): `docs_per_group=1000` does that on one shard.
    """
    if seq_len < 3:
        raise ValueError(f"seq_len must be >= 3 (BOS, at least one token, EOS), got {seq_len}")
    if docs_per_group is not None and docs_per_group < 1:
        raise ValueError(f"docs_per_group must be None or >= 1, got {docs_per_group}")
    body = seq_len - 2
    eos = np.asarray([eos_id], np.int32)
    pending, count, in_group = [], 0, 0
    for doc in documents:
        pending += [np.asarray(doc, np.int32).reshape(-1), eos]
        count += len(pending[-2]) + 1
        in_group += 1
        if count >= body:
            stream = np.concatenate(pending)
            full = len(stream) // body * body
            for start in range(0, full, body):
                yield _block(stream[start:start + body], bos_id, eos_id)
            pending, count = [stream[full:]], len(stream) - full
        if docs_per_group is not None and in_group == docs_per_group:
            pending, count, in_group = [], 0, 0


def _block(body: np.ndarray, bos_id: int, eos_id: int) -> np.ndarray:
    out = np.empty(len(body) + 2, np.int32)
    out[0], out[1:-1], out[-1] = bos_id, body, eos_id
    return out


def pack_documents(documents: Iterable[np.ndarray], *, seq_len: int, bos_id: int, eos_id: int,
                   docs_per_group: int | None = None) -> np.ndarray:
    """`wrapped_blocks` in memory: int32[num_blocks, seq_len] (num_blocks may be 0)."""
    blocks = list(wrapped_blocks(documents, seq_len=seq_len, bos_id=bos_id, eos_id=eos_id,
                                 docs_per_group=docs_per_group))
    return np.stack(blocks) if blocks else np.zeros((0, seq_len), np.int32)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (GPT-2's 50257 does), else int32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


def _npy_header(dtype: np.dtype, shape: tuple[int, int]) -> bytes:
    """A .npy v1.0 header of exactly NPY_HEADER_BYTES bytes (dict padded with spaces, ending in a newline)."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    size = NPY_HEADER_BYTES - len(NPY_MAGIC) - 4
    if len(text) + 1 > size:
        raise ValueError(f"shape {shape} does not fit the reserved .npy header")
    return NPY_MAGIC + b"\x01\x00" + struct.pack("<H", size) + (text.ljust(size - 1) + "\n").encode("latin1")


def write_blocks(blocks: Iterable[np.ndarray], path: str | os.PathLike, *, seq_len: int, vocab_size: int) -> int:
    """Streams int[seq_len] blocks into a `.npy` file int[num, seq_len] (dtype `token_dtype(vocab_size)`), written
    to a temporary file and renamed into place when complete; returns num. Ids are checked against vocab_size."""
    path = Path(path)
    dtype = token_dtype(vocab_size)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # processes packing one shared cache do not collide
    num = 0
    with open(tmp, "wb") as f:
        f.write(_npy_header(dtype, (0, seq_len)))
        for block in blocks:
            block = np.asarray(block)
            if block.shape != (seq_len,):
                raise ValueError(f"block {num} has shape {block.shape}, expected ({seq_len},)")
            if block.min() < 0 or block.max() >= vocab_size:
                raise ValueError(f"block {num}: id {int(block.max())} outside [0, {vocab_size})")
            f.write(block.astype(dtype).tobytes())
            num += 1
        f.seek(0)
        f.write(_npy_header(dtype, (num, seq_len)))
    os.replace(tmp, path)
    return num


def read_blocks(path: str | os.PathLike) -> np.ndarray:
    """The blocks of a packed `.npy` file, memory-mapped read-only: int[num, seq_len]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such packed-blocks file")
    blocks = np.load(path, mmap_mode="r", allow_pickle=False)
    if blocks.ndim != 2:
        raise ValueError(f"{path}: expected blocks int[num, seq_len], got shape {blocks.shape}")
    return blocks


class PackedSource:
    """Random-access source over a packed `.npy` file: element i is {'x0': int32[seq_len]} (grain protocol)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._blocks = read_blocks(path)

    def __len__(self) -> int:
        return len(self._blocks)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"x0": np.asarray(self._blocks[index], np.int32)}

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __repr__(self) -> str:
        return f"PackedSource({self.path!r}, {len(self)} blocks of {self._blocks.shape[1]})"

