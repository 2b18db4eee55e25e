"""Training and storage shared by the evaluator networks (classifier, evaluator LM): one jitted Adam loop, npz I/O."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax


def fit(key, loss_fn: Callable[..., jax.Array], params: Any, data: tuple[jax.Array, ...], *, num_steps: int,
        batch_size: int, learning_rate: float, weight_decay: float = 0.0) -> tuple[Any, jax.Array]:
    """Minimise `loss_fn(params, *batch)` with AdamW on minibatches drawn uniformly (with replacement).

    data: arrays sharing a leading axis [n, ...]; the whole loop is one `lax.scan` under one `jax.jit`.
    Returns (params, losses float32[num_steps]).
    """
    n = data[0].shape[0]
    if any(a.shape[0] != n for a in data):
        raise ValueError(f"data arrays must share the leading axis, got {[a.shape for a in data]}")
    opt = optax.adamw(learning_rate, weight_decay=weight_decay)

    @jax.jit
    def run(key, params, data):
        def step(carry, k):
            params, opt_state = carry
            idx = jax.random.randint(k, (batch_size,), 0, n)
            loss, grads = jax.value_and_grad(loss_fn)(params, *(a[idx] for a in data))
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, num_steps))
        return params, losses

    return run(key, params, tuple(jnp.asarray(a) for a in data))


def save_params(path, params: Any) -> None:
    """Write a params pytree to an .npz file, one array per leaf, keyed by its tree path."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    np.savez(path, **{jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves})


def load_params(path, template: Any) -> Any:
    """Read an .npz written by `save_params` into the structure of `template` (shapes and dtypes checked)."""
    with np.load(path) as stored:
        paths, treedef = jax.tree_util.tree_flatten_with_path(template)
        leaves = []
        for p, ref in paths:
            name = jax.tree_util.keystr(p)
            if name not in stored:
                raise KeyError(f"{path} has no parameter {name}")
            value = stored[name]
            if value.shape != ref.shape:
                raise ValueError(f"parameter {name}: stored shape {value.shape}, model expects {ref.shape}")
            leaves.append(jnp.asarray(value, ref.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)
