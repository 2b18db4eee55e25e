"""`--data` on the runner's command line: a user's own data in place of the config's `data` section.

    --data=PATH.npy                   int tokens [num, D]                          -> data kind 'npy'
    --data=tfds:NAME[:split]          digits | mnist | cifar10 | lm1b (split train) -> data kind 'tfds'
    --data=FOLDER [--tokenizer=char]  the folder's text files ('*.txt')             -> data kind 'text_folder'

The kind's other options (holdout, split_seed, vocab_size, seq_len, pattern, data_dir, ...) come from
`--config.data.<option>=value` on the same command line; the config file's own data section is dropped.
"""
from __future__ import annotations

from pathlib import Path

FORMS = "PATH.npy, tfds:NAME[:split] or a folder of text files"


def data_section(spec: str, tokenizer: str | None = None) -> dict:
    """The config `data` section that `--data=spec` (and `--tokenizer`) stand for; an unusable spec is a
    ValueError / FileNotFoundError naming it."""
    if not spec:
        raise ValueError(f"--data is empty; expected {FORMS}")
    if spec.startswith("tfds:"):
        name, _, split = spec[len("tfds:"):].partition(":")
        if not name:
            raise ValueError(f"--data={spec}: no dataset name; expected tfds:NAME[:split], e.g. tfds:mnist:train")
        section = {"kind": "tfds", "name": name, "split": split or "train"}
    elif spec.endswith(".npy"):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"--data={spec}: no such file; expected {FORMS}")
        section = {"kind": "npy", "path": spec}
    elif Path(spec).is_dir():
        return {"kind": "text_folder", "path": spec, "tokenizer": tokenizer or "char"}
    elif Path(spec).exists():
        raise ValueError(f"--data={spec}: a file that does not end in .npy; expected {FORMS}")
    else:
        raise FileNotFoundError(f"--data={spec}: no such file or folder; expected {FORMS}")
    if tokenizer is not None:
        raise ValueError(f"--tokenizer={tokenizer} applies to a folder of text files, not --data={spec}")
    return section


def label(section: dict) -> str:
    """A short name of the data for the experiment's name (tables, plots)."""
    if section["kind"] == "tfds":
        return f"tfds:{section['name']}:{section['split']}"
    return Path(section["path"]).name + ("/" if section["kind"] == "text_folder" else "")
