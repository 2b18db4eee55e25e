"""Byte-level BPE (GPT-2's) through Hugging Face `tokenizers`, read from a local `tokenizer.json`; nothing is
downloaded.

MDLM, SDTT and Di4C's OpenWebText models use the GPT-2 tokenizer (kuleshov-group/mdlm:dataloader.py,
`get_tokenizer`): 50257 ids, '<|endoftext|>' (id 50256) serving as both BOS and EOS. The masked process adds one
mask id, `vocab_size` (50257), as MDLM's `Diffusion.__init__` does (kuleshov-group/mdlm:diffusion.py).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "[EOS]", "[SEP]")
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_tokenization(text: str) -> str:
    """transformers' `clean_up_tokenization` (huggingface/transformers:src/transformers/tokenization_utils_base.py):
    drops the space before punctuation and English contractions. `decode(..., clean_up_spaces=True)` applies it, as
    `batch_decode` did by default in the transformers 4.38 that MDLM pins."""
    for old, new in _CLEAN_UP:
        text = text.replace(old, new)
    return text


def tokenizer_json_path(path: str | os.PathLike) -> Path:
    """`path` itself, or `path/tokenizer.json` for a folder; a FileNotFoundError naming it when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path}: no such file; expected a Hugging Face tokenizer.json (for "
                                f"GPT-2: the tokenizer.json of the 'gpt2' model repository, copied to this machine)")
    return path


class BPETokenizer:
    """A `tokenizers.Tokenizer` from a local tokenizer.json, with the interface of the byte and char tokenizers.

    vocab_size: largest id (added tokens included) + 1; 50257 for GPT-2.
    eos_id / bos_id: `eos_token` (default: the first of EOS_CANDIDATES in the vocabulary) and `bos_token`
      (default: the EOS token, as in GPT-2).
    """

    def __init__(self, path: str | os.PathLike, *, eos_token: str | None = None, bos_token: str | None = None):
        from tokenizers import Tokenizer

        self.path = tokenizer_json_path(path)
        try:
            self._tok = Tokenizer.from_file(str(self.path))
        except Exception as err:  # tokenizers raises a bare Exception on a malformed file
            raise ValueError(f"{self.path}: not a readable Hugging Face tokenizer.json ({err})") from None
        self._tok.no_padding()
        self._tok.no_truncation()
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1
        if eos_token is None:
            eos_token = next((t for t in EOS_CANDIDATES if t in vocab), None)
            if eos_token is None:
                specials = sorted(t.content for t in self._tok.get_added_tokens_decoder().values())
                raise ValueError(f"{self.path}: no end-of-text token among {EOS_CANDIDATES}; name one with "
                                 f"eos_token= (special tokens of this file: {specials[:12]})")
        self.eos_token, self.bos_token = eos_token, bos_token or eos_token
        self.eos_id, self.bos_id = self._token_id(self.eos_token), self._token_id(self.bos_token)

    def _token_id(self, token: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{self.path}: token {token!r} is not in the vocabulary")
        return int(token_id)

    def __repr__(self) -> str:
        return f"BPETokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, eos={self.eos_token!r})"

    def __getstate__(self):
        return {"path": str(self.path), "eos_token": self.eos_token, "bos_token": self.bos_token}

    def __setstate__(self, state):
        self.__init__(state["path"], eos_token=state["eos_token"], bos_token=state["bos_token"])

    def encode(self, text: str, *, add_special_tokens: bool = False) -> np.ndarray:
        """str -> int32[L]. Special tokens written in the text (e.g. '<|endoftext|>') map to their ids;
        `add_special_tokens` applies the file's post-processor (none for GPT-2)."""
        return np.asarray(self._tok.encode(text, add_special_tokens=add_special_tokens).ids, np.int32)

    def encode_batch(self, texts: Sequence[str], *, add_special_tokens: bool = False) -> list[np.ndarray]:
        """`encode` of each text (in parallel inside `tokenizers`) -> list of int32[L_i]."""
        out = self._tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return [np.asarray(e.ids, np.int32) for e in out]

    def _check_ids(self, ids, where: str = "") -> list[int]:
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = int(np.flatnonzero((ids < 0) | (ids >= self.vocab_size))[0])
            raise ValueError(f"BPE ids must lie in [0, {self.vocab_size}), got {int(ids[bad])} at {where}position "
                             f"{bad} (a mask id left in a sample?)")
        return ids.tolist()

    def decode(self, ids, *, skip_special_tokens: bool = False, clean_up_spaces: bool = False) -> str:
        """int[L] -> str; special tokens kept as text unless `skip_special_tokens` (as transformers' decode)."""
        text = self._tok.decode(self._check_ids(ids), skip_special_tokens=skip_special_tokens)
        return clean_up_tokenization(text) if clean_up_spaces else text

    def decode_batch(self, rows, *, skip_special_tokens: bool = False, clean_up_spaces: bool = False) -> list[str]:
        """int[n, L] (or a list of int[L_i]) -> n strings."""
        rows = [self._check_ids(r, f"row {i}, ") for i, r in enumerate(rows)]
        texts = self._tok.decode_batch(rows, skip_special_tokens=skip_special_tokens)
        return [clean_up_tokenization(t) for t in texts] if clean_up_spaces else texts
