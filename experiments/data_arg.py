"""`--data` on the runner's command line: a user's own data in place of the config's `data` section.

    --data=PATH.npy                   int tokens [num, D]                          -> data kind 'npy'
    --data=tfds:NAME[:split]          digits | mnist | cifar10 | lm1b (split train) -> data kind 'tfds'
    --data=FOLDER [--tokenizer=char]  the folder's text files ('*.txt')             -> data kind 'text_folder'
                                      --tokenizer: char | byte | bpe:PATH/tokenizer.json (e.g. GPT-2's; each file
                                      is then a document, packed into MDLM's wrapped blocks of data.seq_len)
    --data=hf:NAME[:split] --tokenizer=bpe:PATH     a Hugging Face text dataset -> data kind 'wrapped_text'
    --data=tfds:NAME[:split] --tokenizer=bpe:PATH   a tfds text dataset         -> data kind 'wrapped_text'
                                      documents packed into MDLM's wrapped blocks (seq_len 1024), e.g. OpenWebText
                                      as MDLM: --data='hf:openwebtext:train[:-100000]' --tokenizer=bpe:gpt2/

The kind's other options (holdout, split_seed, vocab_size, seq_len, pattern, data_dir, ...) come from
`--config.data.<option>=value` on the same command line; the config file's own data section is dropped.
"""
from __future__ import annotations

from pathlib import Path

FORMS = "PATH.npy, tfds:NAME[:split], hf:NAME[:split] (with --tokenizer=bpe:PATH) or a folder of text files"


def data_section(spec: str, tokenizer: str | None = None) -> dict:
    """The config `data` section that `--data=spec` (and `--tokenizer`) stand for; an unusable spec is a
    ValueError / FileNotFoundError naming it."""
    if not spec:
        raise ValueError(f"--data is empty; expected {FORMS}")
    if spec.startswith(("tfds:", "hf:")):
        source, _, rest = spec.partition(":")
        name, _, split = rest.partition(":")
        if not name:
            raise ValueError(f"--data={spec}: no dataset name; expected {source}:NAME[:split], e.g. tfds:mnist:train "
                             f"or hf:openwebtext")
        if tokenizer is not None or source == "hf":
            return _wrapped_text(spec, source, name, split or "train", tokenizer)
        section = {"kind": "tfds", "name": name, "split": split or "train"}
    elif spec.endswith(".npy"):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"--data={spec}: no such file; expected {FORMS}")
        section = {"kind": "npy", "path": spec}
    elif Path(spec).is_dir():
        from di4c_jax.data.tokenizers import check_tokenizer_spec

        return {"kind": "text_folder", "path": spec, "tokenizer": check_tokenizer_spec(tokenizer or "char")}
    elif Path(spec).exists():
        raise ValueError(f"--data={spec}: a file that does not end in .npy; expected {FORMS}")
    else:
        raise FileNotFoundError(f"--data={spec}: no such file or folder; expected {FORMS}")
    if tokenizer is not None:
        raise ValueError(f"--tokenizer={tokenizer} applies to a folder of text files or a text dataset "
                         f"(hf:/tfds: with bpe:PATH), not --data={spec}")
    return section


def _wrapped_text(spec: str, source: str, name: str, split: str, tokenizer: str | None) -> dict:
    """`--data=hf:...` / `tfds:... --tokenizer=bpe:PATH`: documents packed into wrapped blocks."""
    from di4c_jax.data.tokenizers import check_tokenizer_spec

    if tokenizer is None or not check_tokenizer_spec(tokenizer).startswith("bpe:"):
        raise ValueError(f"--data={spec}: a text dataset needs --tokenizer=bpe:PATH/tokenizer.json (e.g. GPT-2's), "
                         f"got {'no --tokenizer' if tokenizer is None else '--tokenizer=' + tokenizer}")
    return {"kind": "wrapped_text", "source": source, "name": name, "split": split, "tokenizer": tokenizer}


def label(section: dict) -> str:
    """A short name of the data for the experiment's name (tables, plots)."""
    if section["kind"] == "tfds":
        return f"tfds:{section['name']}:{section['split']}"
    if section["kind"] == "wrapped_text":
        return f"{section['source']}:{section['name']}:{section['split']}"
    return Path(section["path"]).name + ("/" if section["kind"] == "text_folder" else "")
