"""Build an experiment's pieces (process, data, model configs, objectives) from its ConfigDict.

Data kinds (config.data.kind):
  exact   a correlated law with exact probabilities (config.data.law: 'ising' | 'parity' | 'mixture'); the
          training set is `num_train` samples of it; evaluation uses the exact law.
  hmm     a random hidden Markov model language (exact likelihood); training set = `num_train` sequences.
  digits  scikit-learn digits (8x8, 17 levels, 10 classes) through the project's TFDS/array_record builder.
  pystdlib_text  the Python standard library's source files as characters.
  npy     config.data.path: a user's int tokens [num, D] (vocab inferred or config.data.vocab_size).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from di4c_jax import data as data_lib
from di4c_jax import eval as eval_lib
from di4c_jax.models import registry
from di4c_jax.processes import DiscreteGaussian, Masked, Uniform


@dataclasses.dataclass
class Setup:
    config: Any
    workdir: Path
    process: Any
    info: Any  # di4c_jax.data.DataInfo
    train_source: Any
    eval_source: Any  # held-out split (or None)
    law: Any = None  # exact law (data.kind == 'exact')
    hmm: Any = None  # (log_init, log_trans, log_emit) (data.kind == 'hmm')

    @property
    def num_dims(self) -> int:
        return self.info.num_dims

    @property
    def conditional(self) -> bool:
        return bool(self.config.model.get("class_conditional", False)) and self.info.num_classes > 0

    @property
    def null_class(self) -> int:
        return self.info.num_classes


def make_law(cfg, key):
    """The exact law of config.data (D <= 8, K <= 4)."""
    d, k = cfg.num_dims, cfg.num_states
    if cfg.law == "ising":
        return eval_lib.IsingChain(num_dims=d, num_states=k, coupling=cfg.get("coupling", 1.0),
                                   field=cfg.get("field", 0.0))
    if cfg.law == "parity":
        return eval_lib.ParityLaw.uniform(d, k)
    if cfg.law == "mixture":
        return eval_lib.ProductMixture.random(key, cfg.get("num_components", 4), d, k,
                                              sharpness=cfg.get("sharpness", 3.0))
    raise ValueError(f"unknown exact law {cfg.law!r}; choose 'ising', 'parity' or 'mixture'")


def _array_sources(tokens: np.ndarray, vocab: int, num_eval: int):
    train, _ = data_lib.load_dataset(tokens[num_eval:], vocab_size=vocab, name="train")
    held, info = data_lib.load_dataset(tokens[:num_eval], vocab_size=vocab, name="eval")
    return train, held, info


def build_data(config, workdir: Path):
    """(train_source, eval_source, info, law, hmm) for config.data."""
    cfg = config.data
    key = jax.random.key(cfg.get("seed", 1234))
    law_key, sample_key = jax.random.split(key)
    if cfg.kind == "exact":
        law = make_law(cfg, law_key)
        tokens = np.asarray(law.sample(sample_key, cfg.num_train + cfg.num_eval))
        return (*_array_sources(tokens, cfg.num_states, cfg.num_eval), law, None)
    if cfg.kind == "hmm":
        hmm = eval_lib.random_hmm(law_key, cfg.num_hidden, cfg.vocab_size,
                                  trans_sharpness=cfg.get("trans_sharpness", 2.0),
                                  emit_sharpness=cfg.get("emit_sharpness", 2.0))
        tokens, _ = eval_lib.sample_hmm(sample_key, cfg.num_train + cfg.num_eval, cfg.seq_len, *hmm)
        return (*_array_sources(np.asarray(tokens), cfg.vocab_size, cfg.num_eval), None, hmm)
    if cfg.kind == "digits":
        data_dir = workdir / "data"
        train, info = data_lib.load_dataset("digits", "train", data_dir=data_dir)
        held, _ = data_lib.load_dataset("digits", "test", data_dir=data_dir)
        return train, held, info, None, None
    if cfg.kind == "pystdlib_text":
        kw = dict(seq_len=cfg.seq_len, tokenizer=cfg.get("tokenizer", "char"), max_files=cfg.get("max_files"))
        train, info = data_lib.load_dataset("pystdlib_text", "train", **kw)
        held, _ = data_lib.load_dataset("pystdlib_text", "test", **kw)
        return train, held, info, None, None
    if cfg.kind == "npy":
        train, info = data_lib.load_dataset(cfg.path, vocab_size=cfg.get("vocab_size"))
        return train, None, info, None, None
    raise ValueError(f"unknown data kind {cfg.kind!r}")


def build_process(config, num_data_states: int):
    cfg = config.process
    if cfg.kind == "masked":
        return Masked(vocab_size=num_data_states, schedule=cfg.get("schedule", "loglinear"),
                      subs=cfg.get("subs", True))
    if cfg.kind == "uniform":
        return Uniform(num_states=num_data_states, schedule=cfg.get("schedule", "linear"))
    if cfg.kind == "gaussian":
        return DiscreteGaussian(num_states=num_data_states, rate_sigma=cfg.get("rate_sigma", 6.0),
                                q_sigma=cfg.get("q_sigma", 512.0), time_base=cfg.get("time_base", 3.0),
                                time_exponential=cfg.get("time_exponential", 100.0),
                                t_min=cfg.get("t_min", 0.01))
    raise ValueError(f"unknown process kind {cfg.kind!r}; choose 'masked', 'uniform' or 'gaussian'")


def model_config(setup: Setup, student: bool):
    """The teacher's (student=False) or student's model ConfigDict; the student adds the lambda input."""
    cfg = setup.config.model
    overrides = dict(cfg.get("overrides", {}))
    kind = registry.model_config(cfg.size).kind
    if kind == "unet":
        channels, resolution = setup.info.shape[0], setup.info.shape[-1]
        overrides.update(num_states=setup.process.num_states, channels=channels, resolution=resolution)
    else:
        overrides.update(num_states=setup.process.num_states, num_positions=setup.num_dims)
        if setup.conditional:
            overrides["num_classes"] = setup.info.num_classes
    if student:
        overrides["lam_style"] = cfg.get("lam_style", "token" if kind == "dit" else "embed")
        overrides["lam_zero_init"] = cfg.get("lam_zero_init", True)
    return registry.model_config(cfg.size, **overrides)


def build_setup(config, workdir) -> Setup:
    workdir = Path(workdir)
    train, held, info, law, hmm = build_data(config, workdir)
    process = build_process(config, info.vocab_size)
    return Setup(config, workdir, process, info, train, held, law=law, hmm=hmm)
