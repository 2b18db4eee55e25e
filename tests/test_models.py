"""Denoisers: shapes, jit, dropout, exact teacher equality of zero-init students, lambda dependence, class
conditioning, the truncated logistic head, bf16 compute."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from di4c_jax import Denoiser
from di4c_jax.models import (MODEL_KINDS, abstract_params, build_denoiser, init_student_from_teacher, make_denoiser,
                             model_config, param_count, truncated_logistic_logits)
from di4c_jax.models.dit import DiTBlock, apply_rotary, attention, rotary_tables

B = 3
CONFIGS = {  # (size name, overrides) small enough for CPU
    "mlp": ("mlp-tiny", dict(num_states=5, num_positions=6, dropout=0.1)),
    "dit": ("dit-tiny", dict(num_states=7, num_positions=6)),
    "dit_class": ("dit-tiny", dict(num_states=7, num_positions=6, num_classes=4, time_conditioning=False)),
    "unet17": ("unet-tiny", {}),
    "unet256": ("unet-tiny", dict(channels=3, num_states=256)),
}
STUDENT_STYLES = [("mlp", "embed"), ("dit", "embed"), ("dit", "token"), ("dit_class", "token"),
                  ("unet17", "embed")]
SLOW = pytest.mark.slow  # U-Net parameter init and apply take minutes to compile on a loaded 2-core CPU


def _params(cases):
    return [pytest.param(*c, marks=SLOW) if c[0].startswith("unet") else c for c in cases]


def _cfg(which, **overrides):
    name, kw = CONFIGS[which]
    return model_config(name, **{**kw, **overrides})


@functools.lru_cache(maxsize=None)
def _built(which, lam_style=None):
    """(config, jitted apply, params), built once per session: parameter init compiles slowly on CPU."""
    cfg = _cfg(which, lam_style=lam_style)
    denoiser, params = build_denoiser(cfg, jax.random.key(0))
    return cfg, jax.jit(denoiser.apply), params


def _eager(which, lam_style=None):
    """Op by op: with jit disabled even the DiT's scan over its blocks runs as a Python loop."""
    apply = make_denoiser(_cfg(which, lam_style=lam_style)).apply

    def eager(*args, **kwargs):
        with jax.disable_jit():
            return apply(*args, **kwargs)

    return eager


def _inputs(cfg, key=jax.random.key(1)):
    d = cfg.get("num_positions") or cfg.channels * cfg.resolution ** 2
    k1, k2 = jax.random.split(key)
    x = jax.random.randint(k1, (B, d), 0, cfg.num_states)
    t = jax.random.uniform(k2, (B,), minval=0.05, maxval=0.95)
    return x, t


def _perturb(params, key, scale=0.3, only=None):
    """Add noise to every leaf (or to the leaves of `only`'s paths) so that zero-init layers become non-trivial."""
    leaves, treedef = jax.tree.flatten_with_path(params)
    keys = jax.random.split(key, len(leaves))
    out = [v + scale * jax.random.normal(k, v.shape) if only is None or only(jax.tree_util.keystr(p)) else v
           for (p, v), k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, out)


def _student_only(teacher_params):
    flat = {jax.tree_util.keystr(p) for p, _ in jax.tree.flatten_with_path(teacher_params)[0]}
    return lambda path: path not in flat


@pytest.mark.parametrize("which,lam_style", _params([(w, None) for w in CONFIGS] + STUDENT_STYLES))
def test_shapes_dtypes_jit_dropout(which, lam_style):
    cfg, f, params = _built(which, lam_style)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(params))
    x, t = _inputs(cfg)
    lam = jnp.linspace(0.1, 0.9, B) if lam_style else None
    out = f(params, x, t, lam, None)
    assert out.shape == (B, x.shape[1], cfg.num_states) and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_array_equal(out, f(params, x, t, lam, None))  # deterministic without rngs
    params = _perturb(params, jax.random.key(2))  # zero-init output layers would hide dropout
    d0 = f(params, x, t, lam, None, rngs=jax.random.key(0))
    d1 = f(params, x, t, lam, None, rngs=jax.random.key(1))
    np.testing.assert_array_equal(d0, f(params, x, t, lam, None, rngs=jax.random.key(0)))
    assert not np.allclose(d0, d1) and not np.allclose(d0, f(params, x, t, lam, None))


@pytest.mark.parametrize("which,lam_style", _params(STUDENT_STYLES))
def test_zero_init_student_equals_teacher_exactly(which, lam_style):
    cfg, teacher_apply, teacher = _built(which)
    teacher = _perturb(teacher, jax.random.key(3))
    _, f, fresh = _built(which, lam_style)  # lam_zero_init=True is the default
    student = init_student_from_teacher(teacher, fresh)
    x, t = _inputs(cfg)
    cond = jnp.array([0, 3, 4])[:B] if "class" in which else None
    lams = (jnp.array([0.0, 0.13, 0.97]), jnp.array([0.5, 1.0, 0.31]))  # one lambda per row
    if lam_style == "token":
        # Op by op the student is bitwise its teacher; under jit XLA fuses the shared attention intermediates
        # differently (dit.py docstring), so the jitted comparison allows float rounding only.
        ref = _eager(which)(teacher, x, t, None, cond)
        np.testing.assert_array_equal(_eager(which, lam_style)(student, x, t, lams[0], cond), ref)
        for lam in lams:
            np.testing.assert_allclose(f(student, x, t, lam, cond), teacher_apply(teacher, x, t, None, cond),
                                       rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(ref))))
    else:
        ref = teacher_apply(teacher, x, t, None, cond)
        for lam in lams:
            np.testing.assert_array_equal(f(student, x, t, lam, cond), ref)
    assert float(jnp.std(ref)) > 1e-3  # a non-trivial teacher

    # The same student with its lambda parameters moved away from zero depends on lambda (the test can fail).
    moved = _perturb(student, jax.random.key(4), scale=1.0, only=_student_only(teacher))
    a, b = (f(moved, x, t, jnp.full((B,), lam), cond) for lam in (0.1, 0.8))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3
    assert float(jnp.max(jnp.abs(a - ref))) > 1e-3


def test_lambda_token_gate_one_is_extra_token_attention():
    """Gate 1 reproduces plain softmax attention over the D + 1 tokens [x; z] (z without rotary)."""
    hidden, heads, d = 16, 2, 5
    block = DiTBlock(hidden, heads, 32, 8, 0.0, lam_token=True, gate_init=1.0, dtype=None, rngs=nnx.Rngs(0))
    block.adaln.kernel[...] = 0.2 * jax.random.normal(jax.random.key(5), block.adaln.kernel.shape)
    kx, kz, kc = jax.random.split(jax.random.key(6), 3)
    x, z = jax.random.normal(kx, (2, d, hidden)), jax.random.normal(kz, (2, 1, hidden))
    c = jax.random.normal(kc, (2, 8))
    cos, sin = rotary_tables(d, hidden // heads)
    out_x, out_z = block(x, c, cos, sin, z)

    shift, scale, gate, shift2, scale2, gate2 = jnp.split(block.adaln(c)[:, None, :], 6, axis=-1)
    q, k, v = block._qkv(jnp.concatenate([x, z], axis=1), shift, scale)  # [B, heads, D + 1, hd]
    q = jnp.concatenate([apply_rotary(q[:, :, :d], cos, sin), q[:, :, d:]], axis=2)
    k = jnp.concatenate([apply_rotary(k[:, :, :d], cos, sin), k[:, :, d:]], axis=2)
    w = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(hidden // heads), axis=-1)
    att = jnp.einsum("bhqk,bhkd->bqhd", w, v).reshape(2, d + 1, hidden)
    full = jnp.concatenate([x, z], axis=1) + gate * block.attn_out(att)
    full = block._mlp(full, shift2, scale2, gate2, None)
    np.testing.assert_allclose(out_x, full[:, :d], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_z, full[:, d:], rtol=1e-5, atol=1e-5)


def test_attention_equals_softmax_reference_with_gradients():
    """attention() (normalised after the value product) equals softmax(q k^T) v and logsumexp, values and
    gradients, including scores large enough that an unshifted exp would overflow."""
    kq, kk, kv, kw = jax.random.split(jax.random.key(7), 4)
    q, k, v = (40.0 * jax.random.normal(key, (2, 3, 5, 4)) for key in (kq, kk, kv))  # [B, heads, L, hd]
    w_out, w_lse = jax.random.normal(kw, (2, 3, 5, 4)), jnp.linspace(-1.0, 1.0, 2 * 3 * 5).reshape(2, 3, 5)

    def reference(q, k, v):
        s = jnp.einsum("bhqd,bhkd->bhqk", q, k) * 0.5
        return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v), jax.nn.logsumexp(s, axis=-1)

    def objective(fn, q, k, v):
        out, lse = fn(q, k, v)
        return (out * w_out).sum() + (lse * w_lse).sum()

    ours = functools.partial(attention, scale=0.5)
    for got, want in zip(ours(q, k, v), reference(q, k, v)):
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
    grads = jax.grad(functools.partial(objective, ours), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(functools.partial(objective, reference), argnums=(0, 1, 2))(q, k, v)
    for g, r in zip(grads, want):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3 * float(np.abs(r).max()))


def test_class_conditioning_and_input_errors():
    cfg, apply, params = _built("dit_class")
    params = _perturb(params, jax.random.key(1))
    x, t = _inputs(cfg)
    null = jnp.full((B,), cfg.num_classes)
    np.testing.assert_array_equal(apply(params, x, t, None, None), apply(params, x, t, None, null))
    a, b = apply(params, x, t, None, jnp.zeros((B,), jnp.int32)), apply(params, x, t, None, null)
    assert not np.allclose(a, b)
    bad = apply(params, x, t, None, jnp.array([0, cfg.num_classes + 1, -1]))
    assert bool(jnp.all(jnp.isnan(bad[1:]))) and bool(jnp.all(jnp.isfinite(bad[0])))
    bad_tok = apply(params, x.at[0, 0].set(cfg.num_states), t, None, None)
    assert bool(jnp.all(jnp.isnan(bad_tok[0]))) and bool(jnp.all(jnp.isfinite(bad_tok[1:])))
    with pytest.raises(ValueError, match="cond must be int"):
        apply(params, x, t, None, jnp.zeros((B + 1,), jnp.int32))
    with pytest.raises(ValueError, match="lam must be"):
        apply(params, x, t, jnp.zeros((B,)), None)
    with pytest.raises(ValueError, match="num_positions"):
        apply(params, x[:, :-1], t, None, None)
    cfg2, apply2, params2 = _built("mlp", "embed")
    x2, t2 = _inputs(cfg2)
    with pytest.raises(ValueError, match="no class conditioning"):
        apply2(params2, x2, t2, jnp.zeros((B,)), jnp.zeros((B,), jnp.int32))
    with pytest.raises(ValueError, match="lam must be"):
        apply2(params2, x2, t2, None, None)


def test_init_student_from_teacher_checks():
    teacher, student = _built("mlp")[2], _built("mlp", "embed")[2]
    merged = init_student_from_teacher(teacher, student)
    np.testing.assert_array_equal(merged["dense_in"]["kernel"], teacher["dense_in"]["kernel"])
    np.testing.assert_array_equal(merged["lam_in"]["kernel"], student["lam_in"]["kernel"])
    with pytest.raises(ValueError, match="absent from the student"):
        init_student_from_teacher(student, teacher)
    _, wider = build_denoiser(_cfg("mlp", hidden=32), jax.random.key(1))
    with pytest.raises(ValueError, match="shape mismatch"):
        init_student_from_teacher(teacher, wider)


@pytest.mark.parametrize("num_levels", [17, 256])
def test_truncated_logistic_masses(num_levels):
    mu = jnp.array([-0.9, -0.2, 0.0, 0.55, 1.0])
    log_scale = jnp.array([-3.0, 0.0, 1.0, -1.0, 2.5])
    logits = truncated_logistic_logits(mu, log_scale, num_levels)
    assert logits.shape == (5, num_levels)
    inv = jnp.exp(2.0 - log_scale)
    edges = jnp.linspace(-1.0, 1.0, num_levels + 1)
    cdf = jax.nn.sigmoid((edges[None, :] - mu[:, None]) * inv[:, None])
    eps_term = 1e-6 * cdf[:, 1:]  # the reference's +1e-6 inside log1p, times sigmoid(right)
    np.testing.assert_allclose(jnp.exp(logits), cdf[:, 1:] - cdf[:, :-1] + eps_term, rtol=1e-3, atol=1e-6)
    # Telescoping: unnormalised mass is the logistic mass inside [-1, 1]; softmax renormalises it to 1.
    np.testing.assert_allclose(jnp.exp(logits).sum(-1), cdf[:, -1] - cdf[:, 0] + eps_term.sum(-1), rtol=1e-4)
    np.testing.assert_allclose(jnp.exp(jax.nn.log_softmax(logits)).sum(-1), 1.0, rtol=1e-5)


@SLOW
@pytest.mark.parametrize("which", ["unet17", "unet256"])
def test_unet_probabilities_normalise(which):
    cfg, apply, params = _built(which)
    x, t = _inputs(cfg)
    logits = apply(params, x, t, None, None)
    assert logits.shape == (B, cfg.channels * cfg.resolution ** 2, cfg.num_states)
    probs = jax.nn.softmax(logits, axis=-1)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert bool(jnp.all(jnp.isfinite(logits))) and float(jnp.std(logits)) > 1e-2


@pytest.mark.parametrize("which,lam_style", [("mlp", "embed"), ("dit", "token")])
def test_bf16_compute_returns_float32(which, lam_style):
    """(The U-Net's bf16 path: loss and gradient tolerance in test_precision.py.)"""
    cfg, apply32, params = _built(which, lam_style)
    cfg16 = _cfg(which, lam_style=lam_style, compute_dtype="bfloat16")
    apply16 = jax.jit(make_denoiser(cfg16).apply)  # the same params serve both dtypes (params are always float32)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(abstract_params(cfg16)))
    params = _perturb(params, jax.random.key(1), scale=0.1)
    x, t = _inputs(cfg)
    lam = jnp.full((B,), 0.4)
    out16 = apply16(params, x, t, lam, None)
    out32 = apply32(params, x, t, lam, None)
    assert out16.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out16)))
    assert not np.array_equal(out16, out32)
    p16, p32 = jax.nn.softmax(out16, axis=-1), jax.nn.softmax(out32, axis=-1)
    tv = 0.5 * jnp.sum(jnp.abs(p16 - p32), axis=-1)  # per-position total variation
    assert float(jnp.mean(tv)) < 0.02 and float(jnp.max(tv)) < 0.2  # bf16 rounding, not a different function


@pytest.mark.slow
def test_paper_size_param_counts():
    assert abs(param_count("dit-small") - 169.6e6) < 0.1e6              # sony/di4c:sdtt/src/sdtt/models/dit_orig.py
    assert param_count(dict(name="dit-small", lam_style="token")) - param_count("dit-small") == 460032 + 12 * 12
    assert abs(param_count("unet-cifar10") - 35.7e6) < 0.1e6            # the DDPM CIFAR-10 U-Net


@pytest.mark.parametrize("which,lam_style,want", [
    ("mlp", None, dict(mixture=False, num_states=5, num_positions=6, num_classes=0)),
    ("mlp", "embed", dict(mixture=True, num_states=5, num_positions=6, num_classes=0)),
    ("dit", None, dict(mixture=False, num_states=7, num_positions=6, num_classes=0)),
    ("dit", "token", dict(mixture=True, num_states=7, num_positions=6, num_classes=0)),
    ("dit_class", "embed", dict(mixture=True, num_states=7, num_positions=6, num_classes=4)),
])
def test_make_denoiser_metadata(which, lam_style, want):
    den = make_denoiser(_cfg(which, lam_style=lam_style))
    assert isinstance(den, Denoiser)
    assert dict(mixture=den.mixture, num_states=den.num_states, num_positions=den.num_positions,
                num_classes=den.num_classes) == want
    assert den.null_class == want["num_classes"]
    assert (den.draw_lam(jax.random.key(0), B) is None) == (not want["mixture"])
    # make_denoiser builds abstractly: its apply runs the params that build_denoiser / init_params allocate.
    cfg, f, params = _built(which, lam_style)
    x, t = _inputs(cfg)
    lam = den.draw_lam(jax.random.key(1), B)
    np.testing.assert_allclose(den(params, x, t, lam), f(params, x, t, lam, None), rtol=1e-5, atol=1e-5)


def test_build_denoiser_returns_a_denoiser_and_kinds_are_registered():
    den, params = build_denoiser(_cfg("mlp", lam_style="embed"), jax.random.key(0))
    assert isinstance(den, Denoiser) and den.mixture and den.num_states == 5
    assert jax.tree.structure(params) == jax.tree.structure(abstract_params(_cfg("mlp", lam_style="embed")))
    assert {"mlp", "dit", "unet"} <= set(MODEL_KINDS.names())
    with pytest.raises(ValueError, match="kind"):
        make_denoiser(dict(kind="no-such-kind", num_states=3))


def test_an_option_the_model_lacks_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"'mlp' model has no option 'lam_blocks' \(set to 1\)") as info:
        make_denoiser(_cfg("mlp", lam_style="embed", lam_blocks=1))
    assert "lam_style" in str(info.value)  # the options it does take
    make_denoiser(_cfg("dit", lam_style="token", lam_blocks=1))  # a DiT takes it
