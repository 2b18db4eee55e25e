"""The model-architecture registry: `kind` name -> NNX module class (each model file registers itself).

A registered class takes its settings as keyword arguments plus `rngs`, among them `lam_style` (None: a product
model; 'embed' or 'token': how lambda enters), and has the attributes `num_states`, `num_positions`,
`num_classes` and `mixture`; its `__call__(x_t, t, lam, cond, *, rngs=None)` returns logits float32[B, D, K].
"""
from di4c_jax.registry import Registry

MODEL_KINDS: Registry[type] = Registry("model architecture")
