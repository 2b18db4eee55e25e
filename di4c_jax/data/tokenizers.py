"""Byte and character tokenizers: str <-> int32[L] with a fixed vocabulary."""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes as ids 0..255 (vocab_size 256).

    Id 0 (the NUL byte, which never occurs in text) doubles as padding: `decode` drops it.
    """

    vocab_size: int = 256
    pad_id: int = 0

    def encode(self, text: str | bytes) -> np.ndarray:
        """Returns int32[L], the UTF-8 bytes of `text` (bytes are taken as they are)."""
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        return np.frombuffer(data, dtype=np.uint8).astype(np.int32)

    def decode(self, ids: np.ndarray) -> str:
        """int[L] -> str; padding dropped, invalid UTF-8 replaced by U+FFFD."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"byte ids must lie in [0, {self.vocab_size}), got range [{ids.min()}, {ids.max()}]")
        data = ids[ids != self.pad_id].astype(np.uint8).tobytes()
        return data.decode("utf-8", errors="replace")


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
    """Unicode characters as ids, vocabulary = the sorted distinct characters of a corpus."""

    chars: str

    def __post_init__(self):
        if len(set(self.chars)) != len(self.chars) or list(self.chars) != sorted(self.chars):
            raise ValueError("CharTokenizer.chars must be sorted and free of duplicates; use CharTokenizer.fit")

    @classmethod
    def fit(cls, text: str) -> "CharTokenizer":
        """Builds the vocabulary from every distinct character of `text`."""
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Returns int32[L]; raises ValueError on a character outside the vocabulary."""
        points = _codepoints(text)
        table = _codepoints(self.chars)
        ids = np.searchsorted(table, points)
        known = ids < len(table)
        known[known] = table[ids[known]] == points[known]
        if not known.all():
            pos = int(np.argmin(known))
            raise ValueError(f"character {text[pos]!r} at position {pos} is not in the vocabulary")
        return ids.astype(np.int32)

    def decode(self, ids: np.ndarray) -> str:
        """int[L] -> str."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"char ids must lie in [0, {self.vocab_size}), got range [{ids.min()}, {ids.max()}]")
        return "".join(self.chars[i] for i in ids)


def _codepoints(text: str) -> np.ndarray:
    """uint32[L] Unicode code points of `text`."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


TOKENIZER_FORMS = "'char', 'byte' or 'bpe:PATH' (a Hugging Face tokenizer.json, or a folder that holds one)"


def check_tokenizer_spec(spec: str) -> str:
    """`spec` if it is 'char', 'byte' or 'bpe:PATH' with PATH an existing tokenizer.json (or a folder holding one);
    otherwise a ValueError / FileNotFoundError naming it."""
    if spec in ("char", "byte"):
        return spec
    if isinstance(spec, str) and spec.startswith("bpe:"):
        from di4c_jax.data.bpe import tokenizer_json_path

        if not spec[len("bpe:"):]:
            raise ValueError(f"tokenizer {spec!r}: no path after 'bpe:'; expected bpe:PATH/tokenizer.json")
        tokenizer_json_path(spec[len("bpe:"):])
        return spec
    raise ValueError(f"unknown tokenizer {spec!r}; expected {TOKENIZER_FORMS}")


def load_bpe(spec: str):
    """'bpe:PATH' -> `BPETokenizer(PATH)`."""
    from di4c_jax.data.bpe import BPETokenizer

    check_tokenizer_spec(spec)
    if not spec.startswith("bpe:"):
        raise ValueError(f"tokenizer {spec!r} is not a BPE; expected bpe:PATH/tokenizer.json")
    return BPETokenizer(spec[len("bpe:"):])
