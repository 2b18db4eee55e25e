"""A small GPT-2-style byte-level BPE trained offline on a few standard-library sources, saved as tokenizer.json.

Like GPT-2's, its '<|endoftext|>' is the last id (added after training), and it has no post-processor ids.
"""
import os
from pathlib import Path

STDLIB_FILES = ("textwrap.py", "shlex.py", "bisect.py", "heapq.py")


def stdlib_texts(names=STDLIB_FILES) -> list[str]:
    root = Path(os.__file__).parent
    return [(root / name).read_text(encoding="utf-8") for name in names]


def train_tiny_bpe(folder, *, vocab_size: int = 400) -> Path:
    """Trains on STDLIB_FILES and writes folder/tokenizer.json; returns its path."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(stdlib_texts(), trainer)
    tok.add_special_tokens(["<|endoftext|>"])
    path = Path(folder) / "tokenizer.json"
    tok.save(str(path))
    return path
