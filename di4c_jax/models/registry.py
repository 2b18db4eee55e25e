"""Named model sizes and the one place where an NNX module becomes a pure `apply(params, ...)`.

`params` is a plain nested dict of float32 arrays (the module's `nnx.Param` leaves, via `nnx.to_pure_dict`, with
every key a string: list indices become '0', '1', ...). It works as is with optax, jax.jit, sharding and Orbax.
Nothing else is state: dropout draws its mask from the `rngs` key given per call, so no RNG counters live anywhere.
`apply` rebuilds the module by path (not by leaf order) on every trace, so key order cannot misplace a leaf.
"""
from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from di4c_jax.denoiser import Denoiser
from di4c_jax.models import dit, maskgit_v1, mlp, unet  # noqa: F401  (each registers its kind)
from di4c_jax.models.kinds import MODEL_KINDS
from di4c_jax.processes.base import as_batch_times, check_tokens

Params = dict[str, Any]
Apply = Callable[..., jax.Array]

# `kind` picks the class; the other keys are its constructor arguments, plus `lam_style` (None | 'embed' | 'token')
# `compute_dtype` (None | 'bfloat16': bf16 matmul operands, float32 params, norms and logits) and `remat` (a name in
# models.remat.REMAT_POLICIES, per block). MLP and U-Net only know the additive style ('embed').
MODEL_SIZES: dict[str, dict[str, Any]] = {
    "mlp-tiny": dict(kind="mlp", embed_dim=8, hidden=64, num_layers=2, time_dim=16, lam_dim=16, dropout=0.0),
    "dit-tiny": dict(kind="dit", hidden=32, depth=2, num_heads=4, cond_dim=16, time_freq_dim=32,
                     lam_feature_dim=32, lam_hidden=32, dropout=0.1),
    "unet-tiny": dict(kind="unet", ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.1,
                      channels=1, resolution=8, num_states=17),
    "unet-digits": dict(kind="unet", ch=64, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(4,),
                        dropout=0.1, channels=1, resolution=8, num_states=17),
    # sdtt DiT-small on OpenWebText (sony/di4c:sdtt/src/sdtt/configs/model/dit-orig-small.yaml): GPT-2 ids + mask,
    # no time conditioning.
    "dit-small": dict(kind="dit", hidden=768, depth=12, num_heads=12, cond_dim=128, dropout=0.1,
                      num_states=50258, num_positions=1024, time_conditioning=False),
    # MaskGIT ImageNet-256 size (sony/di4c:maskgit-pytorch/Trainer/vit.py, `get_network`) as a DiT: 256 VQ tokens,
    # 1024 codes + mask, 1000 classes + null class.
    "maskgit": dict(kind="dit", hidden=768, depth=24, num_heads=16, mlp_dim=3072, cond_dim=128, dropout=0.1,
                    num_states=1025, num_positions=256, num_classes=1000, time_conditioning=False),
    # MaskGIT v1 MaskTransformer exactly (kind 'maskgit_v1', valeoai/Maskgit-pytorch:Network/transformer.py at
    # 32062fa; sizes from sony/di4c:maskgit-pytorch/Trainer/vit.py `get_network`): the released
    # MaskGIT_ImageNet_256.pth, 174,160,874 parameters; lam_style='token' is the Di4C student.
    "maskgit-v1": dict(kind="maskgit_v1", hidden=768, depth=24, num_heads=16, mlp_dim=3072, dropout=0.1,
                       num_states=1025, num_positions=256, num_classes=1000),
    # tauLDR CIFAR-10 U-Net (andrew-cr/tauLDR:config/train/cifar10.py).
    "unet-cifar10": dict(kind="unet", ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                         dropout=0.1, skip_rescale=True, channels=3, resolution=32, num_states=256),
}


def model_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """The named size as a ConfigDict (with `kind`), updated by `overrides` (e.g. num_states, lam_style)."""
    if name not in MODEL_SIZES:
        raise KeyError(f"unknown model size {name!r}; known: {sorted(MODEL_SIZES)}")
    cfg = dict(MODEL_SIZES[name], lam_style=None, compute_dtype=None, remat="none")
    cfg.update(overrides)
    return ml_collections.ConfigDict(cfg)


def _resolved(config) -> dict:
    """A model config (name, dict or ConfigDict) as a plain dict of `kind` and every constructor argument."""
    if isinstance(config, str):
        config = model_config(config)
    cfg = dict(config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config)
    if "name" in cfg:
        cfg = model_config(cfg.pop("name"), **cfg).to_dict()
    return cfg


def _kwargs(config) -> tuple[type, dict]:
    cfg = _resolved(config)
    kind = cfg.pop("kind", None)
    if kind not in MODEL_KINDS:
        raise ValueError(f"model config needs kind in {MODEL_KINDS.names()} (or a name), got {kind!r}")
    cls = MODEL_KINDS.get(kind)
    arguments = inspect.signature(cls.__init__).parameters
    accepted = set(arguments) - {"self", "rngs"}
    unknown = sorted(set(cfg) - accepted)
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in arguments.values()):
        raise ValueError(f"a {kind!r} model has no option {', '.join(map(repr, unknown))} (set to "
                         f"{', '.join(repr(cfg[k]) for k in unknown)}); its options: {sorted(accepted)}")
    dtype = cfg.pop("compute_dtype", None)
    cfg["compute_dtype"] = None if dtype is None else jnp.dtype(dtype)
    for k in ("ch_mult", "attn_resolutions"):
        if k in cfg:
            cfg[k] = tuple(cfg[k])
    return cls, cfg


def build_model(config, key: jax.Array) -> nnx.Module:
    """The NNX module described by `config` (name, dict, ConfigDict), parameters drawn from `key` (eagerly)."""
    cls, kwargs = _kwargs(config)
    return cls(**kwargs, rngs=nnx.Rngs(params=key))


def _pure(tree) -> Params:
    return {str(k): _pure(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, Params]:
    """(graphdef, abstract Param state, params dict); errors if the module holds state other than nnx.Param."""
    graphdef, state, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise ValueError(f"module holds non-Param state (keep RNGs/counters out of modules): {rest}")
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
    return graphdef, abstract, _pure(nnx.to_pure_dict(state))


def init_params(config, key: jax.Array) -> Params:
    """The params dict of `build_denoiser`, initialised in one jitted computation."""
    return jax.jit(lambda k: split_params(build_model(config, k))[2])(key)


def abstract_params(config) -> Params:
    """jax.ShapeDtypeStruct tree of the params, without allocating (e.g. for param counts, Orbax restore)."""
    return jax.eval_shape(lambda k: split_params(build_model(config, k))[2], jax.random.key(0))


def param_count(config) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(abstract_params(config)))


def _lookup(params: Params, path: tuple) -> jax.Array:
    node = params
    for part in path:
        try:
            node = node[str(part)]
        except (KeyError, TypeError):
            raise KeyError(f"params have no leaf {'/'.join(map(str, path))}") from None
    return node


def _check_inputs(model, x_t, t, lam, cond, grid: int | None = None):
    check_tokens(x_t, model.num_states, "x_t")
    b, d = x_t.shape
    if d != model.num_positions:
        raise ValueError(f"x_t has {d} positions, the model was built for num_positions={model.num_positions}")
    t = as_batch_times(t, b)
    if t.shape != (b,):
        raise ValueError(f"t must be float[B] with B={b}, got shape {t.shape}")
    if model.mixture != (lam is not None):
        raise ValueError("lam must be float[B] for a model built with lambda conditioning and None otherwise "
                         f"(model takes lambda: {model.mixture}, lam given: {lam is not None})")
    if lam is not None and getattr(model, "local_latents", 0) and grid is None:
        lam = jnp.asarray(lam, jnp.float32)
        if lam.shape != (b, 1 + d):
            raise ValueError(f"a local-latent model's lam must be float[B, 1 + D] = float{[b, 1 + d]} (the global "
                             f"lambda, then each position's latent id), got shape {lam.shape}")
    elif lam is not None:
        lam = as_batch_times(lam, b) if grid is None else jnp.asarray(lam, jnp.float32)
        want = (b,) if grid is None else (b, grid)
        if lam.shape != want:
            raise ValueError(f"lam must be float{list(want)} with B={b}, got shape {lam.shape}")
    if not model.num_classes:
        if cond is not None:
            raise ValueError("cond was given but the model has no class conditioning (num_classes=0)")
    elif cond is None:
        cond = jnp.full((b,), model.num_classes, jnp.int32)        # None = the null (unconditional) class
    else:
        cond = jnp.asarray(cond)
        if cond.shape != (b,) or not jnp.issubdtype(cond.dtype, jnp.integer):
            raise ValueError(f"cond must be int[B] with B={b}, got {cond.dtype}{list(cond.shape)}")
    return t, lam, cond


def _merged(graphdef: nnx.GraphDef, flat: list, params: Params) -> nnx.Module:
    """The module of `graphdef` with its parameters read from the plain `params` tree."""
    return nnx.merge(graphdef, nnx.from_flat_state([(path, var.replace(_lookup(params, path))) for path, var in flat]))


def make_apply(graphdef: nnx.GraphDef, abstract_state: nnx.State) -> Apply:
    """Pure `apply(params, x_t, t, lam=None, cond=None, *, rngs=None) -> logits float32[B, D, K]`."""
    flat = list(nnx.to_flat_state(abstract_state))

    def apply(params: Params, x_t, t, lam=None, cond=None, *, rngs=None) -> jax.Array:
        """x_t int32[B, D], t float32[B], lam float32[B] | None, cond int32[B] | None (None on a class-
        conditional model = the null class num_classes; ids outside [0, num_classes] give NaN logits).
        rngs: PRNG key for dropout, None = deterministic."""
        model = _merged(graphdef, flat, params)
        t, lam, cond = _check_inputs(model, x_t, t, lam, cond)
        return model(x_t, t, lam, cond, rngs=None if rngs is None else nnx.Rngs(dropout=rngs))

    return apply


def make_components(graphdef: nnx.GraphDef, abstract_state: nnx.State) -> Apply:
    """Pure `components(params, x_t, t, lam, cond=None, *, rngs=None) -> logits float32[B, N, D, K]` at
    lam float32[B, N] (`Denoiser.components`) of a model with a `components` method."""
    flat = list(nnx.to_flat_state(abstract_state))

    def components(params: Params, x_t, t, lam, cond=None, *, rngs=None) -> jax.Array:
        model = _merged(graphdef, flat, params)
        t, lam, cond = _check_inputs(model, x_t, t, lam, cond, grid=jnp.shape(lam)[-1])
        return model.components(x_t, t, lam, cond, rngs=None if rngs is None else nnx.Rngs(dropout=rngs))

    return components


def make_denoiser(model_config) -> Denoiser:
    """The `Denoiser` of a model config (name, dict or ConfigDict): abstract build, nothing allocated."""
    model = nnx.eval_shape(lambda: build_model(model_config, jax.random.key(0)))
    graphdef, abstract, _ = split_params(model)
    shares_trunk = bool(getattr(model, "shares_trunk", False))
    local = int(getattr(model, "local_latents", 0))
    return Denoiser(make_apply(graphdef, abstract), num_states=model.num_states,
                    num_positions=model.num_positions, mixture=bool(model.mixture),
                    num_classes=int(model.num_classes), config_json=config_json(model_config),
                    components=make_components(graphdef, abstract) if shares_trunk else None,
                    local_latents=(local, int(model.local_block), model.lam_style is not None) if local else None)


def config_json(config) -> str:
    """A model config (name, dict or ConfigDict) as canonical JSON: kind and every constructor argument."""
    return json.dumps(_resolved(config), sort_keys=True, default=list)


def build_denoiser(model_config, key: jax.Array) -> tuple[Denoiser, Params]:
    """(Denoiser, params) for a name, dict or ConfigDict; see `make_apply` for the calling convention."""
    return make_denoiser(model_config), init_params(model_config, key)


def init_student_from_teacher(teacher_params: Params, student_params: Params, *,
                              allow_unused: bool = False) -> Params:
    """Student params with every leaf it shares (same path) with the teacher copied from the teacher.

    Student-only leaves (the lambda parameters) keep their init. Shape mismatches raise; teacher-only leaves raise
    unless `allow_unused` (they usually mean the two configs differ).
    """
    def merge(t, s, path):
        if not isinstance(s, Mapping):
            if jnp.shape(t) != jnp.shape(s):
                raise ValueError(f"shape mismatch at {path}: teacher {jnp.shape(t)}, student {jnp.shape(s)}")
            return jnp.asarray(t, jnp.result_type(s))
        unused = set(t) - set(s)
        if unused and not allow_unused:
            raise ValueError(f"teacher leaves absent from the student at {path or '/'}: {sorted(unused)}")
        return {k: merge(t[k], v, f"{path}/{k}") if k in t else v for k, v in s.items()}

    return merge(teacher_params, student_params, "")
