"""A small image classifier trained by the project; its penultimate layer is the feature space for FID / KID.

Works on any image array int[n, C*H*W] (or int[n, C, H, W], flattened) with `num_levels` grey levels; the default
config is sklearn digits (8x8, 17 levels, 10 classes). An MLP is enough there (~98% test accuracy after ~2 s on
CPU). Numbers from this feature space compare samplers with each other, never with Inception-based FIDs.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from di4c_jax.eval.fitting import fit, load_params, save_params


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    num_pixels: int = 64
    num_levels: int = 17
    num_classes: int = 10
    hidden: tuple[int, ...] = (256, 128)


class MLPClassifier(nnx.Module):
    """images float[n, P] in [-1, 1] -> (logits float32[n, num_classes], features float32[n, hidden[-1]])."""

    def __init__(self, config: ClassifierConfig, *, rngs: nnx.Rngs):
        sizes = (config.num_pixels, *config.hidden)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.head = nnx.Linear(sizes[-1], config.num_classes, rngs=rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = jax.nn.gelu(layer(x))
        return self.head(x), x


def _as_inputs(config: ClassifierConfig, images) -> jax.Array:
    x = jnp.asarray(images)
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != config.num_pixels:
        raise ValueError(f"images must have {config.num_pixels} values per row, got shape {jnp.shape(images)}")
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"images must be integer levels in [0, {config.num_levels}), got dtype {x.dtype}")
    return x.astype(jnp.float32) * (2.0 / (config.num_levels - 1)) - 1.0


def init_classifier(key, config: ClassifierConfig):
    """-> (apply, params); apply(params, images int[n, P]) -> (logits float32[n, C], features float32[n, F])."""
    graphdef, params = nnx.split(MLPClassifier(config, rngs=nnx.Rngs(params=key)), nnx.Param)

    def apply(params, images):
        return nnx.merge(graphdef, params)(_as_inputs(config, images))

    return apply, params


def train_classifier(key, config: ClassifierConfig, images, labels, *, num_steps: int = 800,
                     batch_size: int = 128, learning_rate: float = 1e-3, weight_decay: float = 1e-4):
    """Cross-entropy training on (images int[n, P], labels int[n]) -> (apply, params)."""
    labels = jnp.asarray(labels, jnp.int32)
    if labels.min() < 0 or labels.max() >= config.num_classes:
        raise ValueError(f"labels must lie in [0, {config.num_classes}), got [{labels.min()}, {labels.max()}]")
    k_init, k_fit = jax.random.split(key)
    apply, params = init_classifier(k_init, config)
    inputs = jnp.asarray(images).reshape(len(labels), -1)
    _as_inputs(config, inputs)  # shape / dtype errors surface here, not inside the jitted loop

    def loss_fn(params, x, y):
        logits, _ = apply(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    params, _ = fit(k_fit, loss_fn, params, (inputs, labels), num_steps=num_steps, batch_size=batch_size,
                    learning_rate=learning_rate, weight_decay=weight_decay)
    return apply, params


@functools.partial(jax.jit, static_argnames="apply")
def _probs_and_features(apply, params, images):
    logits, feats = apply(params, images)
    return jax.nn.softmax(logits, axis=-1), feats


def classify(apply, params, images, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """-> (class probabilities float32[n, C], penultimate features float32[n, F]).

    Rows go through in batches of one fixed size (the last one padded): a single compilation per apply.
    """
    x = jnp.asarray(images)
    x = x.reshape(x.shape[0], -1)
    n, size = x.shape[0], min(batch_size, x.shape[0])
    x = jnp.concatenate([x, jnp.zeros((-n % size, x.shape[1]), x.dtype)])
    outs = [_probs_and_features(apply, params, x[i:i + size]) for i in range(0, n, size)]
    return tuple(np.concatenate([np.asarray(o[j]) for o in outs])[:n] for j in range(2))


def accuracy(probs, labels) -> float:
    """Fraction of rows whose argmax class equals the label; for class-conditional samples generated with
    `labels` this is the class-consistency accuracy."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    if probs.shape[0] != labels.shape[0]:
        raise ValueError(f"{probs.shape[0]} predictions for {labels.shape[0]} labels")
    return float(np.mean(probs.argmax(1) == labels))


def confidence(probs) -> float:
    """Mean max-softmax probability float[n, C] -> float (high: samples look like clear members of a class)."""
    return float(np.mean(np.max(np.asarray(probs), axis=1)))


def save_classifier(path, params) -> None:
    save_params(path, params)


def load_classifier(path, config: ClassifierConfig):
    """-> (apply, params) read from an npz written by `save_classifier` for the same config."""
    apply, template = init_classifier(jax.random.key(0), config)
    return apply, load_params(path, template)
