"""A tiny stochastic classification problem shared by the engine tests and their worker scripts.

2-layer MLP on 64 features, 16 classes; the loss adds key-dependent input noise so that the step key matters.
w1 (64 x 128 = 8192 elements) is large enough to be FSDP-sharded; the other leaves stay replicated.
"""
from __future__ import annotations

import grain
import jax
import jax.numpy as jnp
import numpy as np

FEATURES, HIDDEN, CLASSES, NUM_EXAMPLES = 64, 128, 16, 512


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_EXAMPLES, FEATURES)).astype(np.float32)
    w = rng.normal(size=(FEATURES, CLASSES)).astype(np.float32)
    return x, np.argmax(x @ w, axis=-1).astype(np.int32)


def init_params(key: jax.Array) -> dict:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (FEATURES, HIDDEN)) / np.sqrt(FEATURES),
        "b1": jnp.zeros((HIDDEN,)),
        "w2": jax.random.normal(k2, (HIDDEN, CLASSES)) / np.sqrt(HIDDEN),
        "b2": jnp.zeros((CLASSES,)),
    }


def loss_fn(key, params, batch, frozen):
    """Mean NLL over the global batch of noisy inputs; `frozen` (if given) is a fixed additive logit bias."""
    x = batch["x"] + 0.1 * jax.random.normal(key, batch["x"].shape)
    logits = jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
    if frozen is not None:
        logits = logits + frozen["bias"]
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, batch["y"][:, None], axis=-1)[:, 0]
    return nll.mean(), {"accuracy": (logits.argmax(-1) == batch["y"]).mean()}


def data_iterator(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0, process_index: int = 0,
                  process_count: int = 1):
    """Checkpointable grain iterator of {'x', 'y'}: this process's rows of each shuffled global batch."""
    local = batch_size // process_count
    lo = process_index * local

    def gather(idx):
        idx = idx[lo:lo + local]
        return {"x": x[idx], "y": y[idx]}

    ds = grain.MapDataset.range(len(x)).shuffle(seed=seed).repeat().batch(batch_size).map(gather)
    return iter(ds)
