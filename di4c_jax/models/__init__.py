"""Neural denoisers (Flax NNX at the edge) turned into pure `apply(params, x_t, t, lam, cond, *, rngs=None)`."""
from di4c_jax.models.dit import DiTDenoiser
from di4c_jax.models.kinds import MODEL_KINDS
from di4c_jax.models.lam import LambdaProjection, lambda_features, sinusoidal_features, time_features
from di4c_jax.models.mlp import MLPDenoiser
from di4c_jax.models.registry import (MODEL_SIZES, abstract_params, build_denoiser, build_model,
                                      init_params, init_student_from_teacher, make_apply, make_denoiser, model_config,
                                      param_count, split_params)
from di4c_jax.models.unet import UNetDenoiser, truncated_logistic_logits

__all__ = [
    "DiTDenoiser", "LambdaProjection", "MLPDenoiser", "MODEL_SIZES", "UNetDenoiser", "abstract_params",
    "build_denoiser", "build_model", "init_params", "init_student_from_teacher", "lambda_features",
    "make_apply", "make_denoiser", "MODEL_KINDS", "model_config", "param_count", "sinusoidal_features",
    "split_params", "time_features",
    "truncated_logistic_logits",
]
