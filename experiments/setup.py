"""Build an experiment's data and process from its `Experiment` description.

Data kinds (config.data.kind), each a registered builder with its own options dataclass:
  exact   a correlated law with exact probabilities (law: 'ising' | 'parity' | 'mixture'); the training set is
          `num_train` samples of it; evaluation uses the exact law.
  hmm     a random hidden Markov model language (exact likelihood); training set = `num_train` sequences.
  digits  scikit-learn digits (8x8, 17 levels, 10 classes) through the project's TFDS/array_record builder.
  pystdlib_text  the Python standard library's source files as characters.
A user's own data (`--data` on the command line; the generic evaluator scores it against the held-out rows, which
a seeded split takes out of the data: `holdout` a fraction or a row count, `split_seed`):
  npy          path: int tokens [num, D] (vocab inferred as max + 1, or vocab_size); labels: optional .npy of
               int[num] class labels (num_classes inferred as max + 1, or given).
  tfds         name (digits | mnist | cifar10 | lm1b), split, data_dir, download, seq_len (lm1b).
  text_folder  path: a folder of text files (pattern '*.txt'), tokenizer 'char' | 'byte' | 'bpe:PATH', seq_len,
               wrap (bpe: each file a document in MDLM's wrapped blocks).
  wrapped_text  source 'hf' | 'tfds', name, split, tokenizer 'bpe:PATH': documents packed into MDLM's wrapped
               blocks of seq_len (1024), cached once as .npy under cache_dir (default <workdir>/data).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from di4c_jax import data as data_lib
from di4c_jax import eval as eval_lib
from di4c_jax.processes import build_process
from di4c_jax.registry import Registry, dataclass_from_options
from experiments.spec import Experiment


@dataclasses.dataclass
class Setup:
    exp: Experiment
    workdir: Path
    process: Any
    info: Any  # di4c_jax.data.DataInfo
    train_source: Any
    eval_source: Any  # held-out split (or None)
    law: Any = None  # exact law (data.kind == 'exact')
    hmm: Any = None  # (log_init, log_trans, log_emit) (data.kind == 'hmm')
    data_note: str = ""  # how the held-out rows were chosen (a user's data), printed by the runner

    @property
    def num_dims(self) -> int:
        return self.info.num_dims

    @property
    def conditional(self) -> bool:
        return self.exp.model.class_conditional and self.info.num_classes > 0


@dataclasses.dataclass(frozen=True)
class DataBundle:
    train: Any
    held_out: Any
    info: Any
    law: Any = None
    hmm: Any = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class DataKind:
    options: type  # dataclass of the kind's options
    build: Callable[[Any, Path], DataBundle]  # (options, workdir) -> DataBundle


DATA_KINDS: Registry[DataKind] = Registry("data kind")


def _array_sources(tokens: np.ndarray, vocab: int, num_eval: int, name: str) -> DataBundle:
    train, info = data_lib.load_dataset(tokens[num_eval:], vocab_size=vocab, name=name)
    held, _ = data_lib.load_dataset(tokens[:num_eval], vocab_size=vocab, name=f"{name} (held out)")
    return DataBundle(train, held, info)


def _held_out(source, info, cfg) -> DataBundle:
    """A user's source split by `data_lib.split_source` (cfg.holdout, cfg.split_seed)."""
    split = data_lib.split_source(source, cfg.holdout, cfg.split_seed)
    return DataBundle(split.train, split.held_out, info, note=split.describe())


@dataclasses.dataclass(frozen=True)
class ExactData:
    law: str
    num_dims: int
    num_states: int
    num_train: int
    num_eval: int
    seed: int = 1234
    coupling: float = 1.0  # ising
    field: float = 0.0  # ising
    num_components: int = 4  # mixture
    sharpness: float = 3.0  # mixture


def make_law(cfg: ExactData, key):
    """The exact law of the options (D <= 8, K <= 4)."""
    d, k = cfg.num_dims, cfg.num_states
    if cfg.law == "ising":
        return eval_lib.IsingChain(num_dims=d, num_states=k, coupling=cfg.coupling, field=cfg.field)
    if cfg.law == "parity":
        return eval_lib.ParityLaw.uniform(d, k)
    if cfg.law == "mixture":
        return eval_lib.ProductMixture.random(key, cfg.num_components, d, k, sharpness=cfg.sharpness)
    raise ValueError(f"unknown exact law {cfg.law!r}; choose 'ising', 'parity' or 'mixture'")


def _build_exact(cfg: ExactData, workdir: Path) -> DataBundle:
    law_key, sample_key = jax.random.split(jax.random.key(cfg.seed))
    law = make_law(cfg, law_key)
    tokens = np.asarray(law.sample(sample_key, cfg.num_train + cfg.num_eval))
    return dataclasses.replace(_array_sources(tokens, cfg.num_states, cfg.num_eval, "exact"), law=law)


@dataclasses.dataclass(frozen=True)
class HMMData:
    num_hidden: int
    vocab_size: int
    seq_len: int
    num_train: int
    num_eval: int
    seed: int = 1234
    trans_sharpness: float = 2.0
    emit_sharpness: float = 2.0


def _build_hmm(cfg: HMMData, workdir: Path) -> DataBundle:
    law_key, sample_key = jax.random.split(jax.random.key(cfg.seed))
    hmm = eval_lib.random_hmm(law_key, cfg.num_hidden, cfg.vocab_size, trans_sharpness=cfg.trans_sharpness,
                              emit_sharpness=cfg.emit_sharpness)
    tokens, _ = eval_lib.sample_hmm(sample_key, cfg.num_train + cfg.num_eval, cfg.seq_len, *hmm)
    return dataclasses.replace(_array_sources(np.asarray(tokens), cfg.vocab_size, cfg.num_eval, "hmm"), hmm=hmm)


@dataclasses.dataclass(frozen=True)
class DigitsData:
    pass


def _build_digits(cfg: DigitsData, workdir: Path) -> DataBundle:
    data_dir = workdir / "data"
    train, info = data_lib.load_dataset("digits", "train", data_dir=data_dir)
    held, _ = data_lib.load_dataset("digits", "test", data_dir=data_dir)
    return DataBundle(train, held, info)


@dataclasses.dataclass(frozen=True)
class TextData:
    seq_len: int
    tokenizer: str = "char"
    max_files: int | None = None


def _build_pystdlib(cfg: TextData, workdir: Path) -> DataBundle:
    kw = dict(seq_len=cfg.seq_len, tokenizer=cfg.tokenizer, max_files=cfg.max_files)
    train, info = data_lib.load_dataset("pystdlib_text", "train", **kw)
    held, _ = data_lib.load_dataset("pystdlib_text", "test", **kw)
    return DataBundle(train, held, info)


@dataclasses.dataclass(frozen=True)
class NpyData:
    path: str
    vocab_size: int | None = None
    labels: str = ""  # optional int[num] class labels (.npy) for class-conditional data
    num_classes: int | None = None  # with labels: max label + 1 when None
    holdout: float = 0.1  # a fraction of the rows, or a row count (>= 1)
    split_seed: int = 0


def _build_npy(cfg: NpyData, workdir: Path) -> DataBundle:
    source, info = data_lib.npy_dataset(cfg.path, vocab_size=cfg.vocab_size, labels_path=cfg.labels or None,
                                        num_classes=cfg.num_classes)
    return _held_out(source, dataclasses.replace(info, name=Path(cfg.path).name), cfg)


@dataclasses.dataclass(frozen=True)
class TfdsData:
    name: str
    split: str = "train"
    data_dir: str | None = None  # default: <workdir>/data for digits (prepared there), tfds' own otherwise
    download: bool = False
    seq_len: int = 128  # lm1b
    holdout: float = 0.1
    split_seed: int = 0


def _build_tfds(cfg: TfdsData, workdir: Path) -> DataBundle:
    if cfg.name == "digits":
        kwargs = dict(data_dir=cfg.data_dir or workdir / "data")
    elif cfg.name in ("mnist", "cifar10"):
        kwargs = dict(data_dir=cfg.data_dir, download=cfg.download)
    elif cfg.name == "lm1b":
        kwargs = dict(data_dir=cfg.data_dir, download=cfg.download, seq_len=cfg.seq_len)
    else:
        raise ValueError(f"--data tfds:{cfg.name}: no loader for this dataset; tfds datasets: digits, mnist, "
                         f"cifar10, lm1b")
    source, info = data_lib.load_dataset(cfg.name, cfg.split, **kwargs)
    return _held_out(source, info, cfg)


@dataclasses.dataclass(frozen=True)
class TextFolderData:
    path: str
    tokenizer: str = "char"
    seq_len: int = 64
    pattern: str = "*.txt"
    wrap: bool | None = None  # None: True for a bpe tokenizer, False for char / byte
    holdout: float = 0.1
    split_seed: int = 0


def _build_text_folder(cfg: TextFolderData, workdir: Path) -> DataBundle:
    tokens, tok, num_files = data_lib.folder_tokens(cfg.path, tokenizer=cfg.tokenizer, seq_len=cfg.seq_len,
                                                    pattern=cfg.pattern, wrap=cfg.wrap)
    kind = "BPE" if cfg.tokenizer.startswith("bpe:") else cfg.tokenizer
    info = data_lib.DataInfo(name=f"{Path(cfg.path).name}/ ({num_files} files, {kind} tokens)",
                             vocab_size=tok.vocab_size, shape=(cfg.seq_len,), decode=tok.decode)
    return _held_out(data_lib.ArraySource(tokens), info, cfg)


@dataclasses.dataclass(frozen=True)
class WrappedTextData:
    source: str  # 'hf' (Hugging Face datasets) | 'tfds'
    name: str  # e.g. 'openwebtext'
    tokenizer: str  # 'bpe:PATH/tokenizer.json'
    split: str = "train"  # MDLM's OpenWebText: 'train[:-100000]' (its validation: 'train[-100000:]')
    config: str | None = None  # hf dataset configuration
    field: str = "text"
    seq_len: int = 1024
    docs_per_group: int | None = None  # MDLM drops a remainder every 1000 documents; None: one at the end
    data_dir: str | None = None  # hf cache_dir / tfds data_dir
    download: bool = False  # tfds
    cache_dir: str | None = None  # the packed blocks; default <workdir>/data
    num_threads: int = 4
    holdout: float = 0.1
    split_seed: int = 0


def _build_wrapped_text(cfg: WrappedTextData, workdir: Path) -> DataBundle:
    from di4c_jax.data import documents

    if cfg.source not in ("hf", "tfds"):
        raise ValueError(f"data.source must be 'hf' or 'tfds', got {cfg.source!r}")
    tok = data_lib.load_bpe(cfg.tokenizer)
    label = f"{cfg.source}:{cfg.name}:{cfg.split}"
    if cfg.source == "hf":
        docs = lambda: documents.hf_documents(cfg.name, cfg.split, config=cfg.config, field=cfg.field,  # noqa: E731
                                              cache_dir=cfg.data_dir)
    else:
        docs = lambda: documents.tfds_documents(cfg.name, cfg.split, field=cfg.field,  # noqa: E731
                                                data_dir=cfg.data_dir, download=cfg.download)
    cache = documents.cache_file(cfg.cache_dir or workdir / "data", label, tok, cfg.seq_len)
    source, info = documents.wrapped_dataset(docs, tok, cache, seq_len=cfg.seq_len, name=label,
                                             docs_per_group=cfg.docs_per_group, num_threads=cfg.num_threads)
    return _held_out(source, info, cfg)


DATA_KINDS.register("exact", DataKind(ExactData, _build_exact))
DATA_KINDS.register("hmm", DataKind(HMMData, _build_hmm))
DATA_KINDS.register("digits", DataKind(DigitsData, _build_digits))
DATA_KINDS.register("pystdlib_text", DataKind(TextData, _build_pystdlib))
DATA_KINDS.register("npy", DataKind(NpyData, _build_npy))
DATA_KINDS.register("tfds", DataKind(TfdsData, _build_tfds))
DATA_KINDS.register("text_folder", DataKind(TextFolderData, _build_text_folder))
DATA_KINDS.register("wrapped_text", DataKind(WrappedTextData, _build_wrapped_text))
USER_DATA_KINDS = ("npy", "tfds", "text_folder", "wrapped_text")  # no known law: scored by the generic evaluator


def build_data(exp: Experiment, workdir: Path) -> DataBundle:
    options = dict(exp.data)
    name = options.pop("kind")
    kind = DATA_KINDS.get(name)
    try:
        cfg = dataclass_from_options(kind.options, options, f"data kind {name!r}")
    except ValueError as err:  # e.g. --config.data.kind=npy on a config whose data section is another kind's
        hint = "; --data=PATH replaces the config's whole data section" if name in USER_DATA_KINDS else ""
        raise ValueError(f"{err}{hint}") from None
    return kind.build(cfg, workdir)


def build_setup(exp: Experiment, workdir) -> Setup:
    workdir = Path(workdir)
    bundle = build_data(exp, workdir)
    options = dict(exp.process)
    process = build_process(options.pop("kind"), bundle.info.vocab_size, **options)
    return Setup(exp, workdir, process, bundle.info, bundle.train, bundle.held_out, law=bundle.law, hmm=bundle.hmm,
                 data_note=bundle.note)


def setup_from_workdir(workdir) -> Setup:
    """The Setup of a finished run, from the config.json it saved."""
    import json

    from experiments.spec import resolve

    workdir = Path(workdir)
    if not (workdir / "config.json").is_file():
        raise FileNotFoundError(f"{workdir} holds no config.json: expected the workdir of an experiment run "
                                f"(python -m experiments.run / di4c-run)")
    return build_setup(resolve(json.loads((workdir / "config.json").read_text())), workdir)
