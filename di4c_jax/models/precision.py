"""Mixed precision at the output layer: float32 logits from low-precision operands, a low-precision backward.

The heads compute [rows, K] logits with bf16 operands and float32 accumulation and output, so the logits are never
rounded. Plain autodiff then carries the float32 cotangent into both transposed products, which promotes the bf16
operand to float32: at K = 50258 the step ran those two products as float32 GEMMs, 12% of a GPU training step. Here
the cotangent is rounded to the operands' dtype first (what every other bf16 layer's cotangent already is), so
both run as bf16 GEMMs with float32 accumulation.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def low_precision_backward_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                                       out_sharding=None):
    """`jax.lax.dot_general` (a drop-in for nnx.Linear's `dot_general`) whose output cotangent is cast to lhs's
    dtype before the backward products. Forward values are those of lax.dot_general; a product other than a dense
    layer's (lhs [..., in] x rhs [in, out]) or with float32 operands is plain lax.dot_general."""
    dense_layer = rhs.ndim == 2 and dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ()))
    if not dense_layer or jnp.dtype(lhs.dtype).itemsize >= 4:
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type, out_sharding=out_sharding)
    return _dense(lhs, rhs, precision, preferred_element_type, out_sharding)


def _product(lhs, rhs, precision, preferred_element_type, out_sharding=None):
    return jax.lax.dot_general(lhs, rhs, (((lhs.ndim - 1,), (0,)), ((), ())), precision=precision,
                               preferred_element_type=preferred_element_type, out_sharding=out_sharding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _dense(lhs, rhs, precision, preferred_element_type, out_sharding):
    return _product(lhs, rhs, precision, preferred_element_type, out_sharding)


def _forward(lhs, rhs, precision, preferred_element_type, out_sharding):
    return _product(lhs, rhs, precision, preferred_element_type, out_sharding), (lhs, rhs)


def _backward(precision, preferred_element_type, out_sharding, operands, cotangent):
    """d lhs = g rhs^T, d rhs = lhs^T g over all rows, with g in lhs's dtype and float32 accumulation."""
    lhs, rhs = operands
    g = cotangent.astype(lhs.dtype)
    d_lhs = _product(g, rhs.T, precision, jnp.float32).astype(lhs.dtype)
    rows_lhs, rows_g = lhs.reshape(-1, lhs.shape[-1]), g.reshape(-1, g.shape[-1])
    d_rhs = _product(rows_lhs.T, rows_g, precision, jnp.float32).astype(rhs.dtype)
    return d_lhs, d_rhs


_dense.defvjp(_forward, _backward)
