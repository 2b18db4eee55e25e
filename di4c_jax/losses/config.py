"""Di4C loss configuration and the three reference presets (tauldr CIFAR-10, sdtt OpenWebText, MaskGIT ImageNet)."""
from __future__ import annotations

import dataclasses

SCHEMES = ("tauldr", "sdtt", "maskgit")


@dataclasses.dataclass(frozen=True)
class Di4CConfig:
    """Static (hashable) settings of `di4c_loss`.

    `scheme` fixes how times are drawn, which teacher step t -> u is taken and how the terms are weighted
    (reference-tauldr.md section 4, reference-masked.md A4 and B4):
      tauldr:  delta ~ LogUniform[min_delta, max_delta], t ~ U[min_time + delta, 1], u = t - delta; analytic teacher
               step; time_coeff = time_coeff_scale * sigmoid(20 (t - 0.5)); a separate small-time distillation batch
               at t' = min_time + Bern(1/2) U small_time_width; consistency weight 1.
      sdtt:    per-sample t (w.p. distil_prob U[0, distil_time], else U[distil_time, 1]) snapped to the grid of
               `time_grid` points; u = t - min(1/time_grid, t/2); ancestral teacher step; distillation at the same
               x_t where t < distil_time, consistency elsewhere.
      maskgit: progress r ~ U[0, 1), t = 1 - r (use a Masked process with the arccos schedule); MaskGIT
               confidence step r -> r + r_delta (Gumbel temperature r_temp (1 - r teacher_steps / (teacher_steps - 1)),
               negative for r > (teacher_steps - 1) / teacher_steps as in the reference); distillation with weight
               1/r_delta where r >= 1 - r_delta, consistency elsewhere.
    `num_lambda` is N (lambda samples of the student mixture at t); `num_composition` is M (teacher steps, student
    u-side passes and composition samples per item), None meaning M = N.
    `teacher_is_mixture` (di4c^2): the teacher is itself a lambda-mixture; its x0 marginal at t is estimated from M
    fresh lambdas, and teacher step m uses the m-th of those components. In tauldr's small-time distillation
    batch, teacher and student components share their lambda: E_lam KL(teacher_lam || student_lam) upper-bounds
    the KL between the two mixtures (joint convexity), as the per-component KL does for a product teacher.
    `student_dropout`: pass a PRNG key as `rngs` to the student's gradient passes (train mode); the u-side target
    pass is always deterministic (rngs=None), as in the masked references.
    """

    scheme: str
    num_lambda: int = 16
    num_composition: int | None = None
    control_variate: bool = True
    teacher_is_mixture: bool = False
    student_dropout: bool = True
    time_coeff_scale: float = 1.0
    # tauldr
    min_time: float = 0.01
    min_delta: float = 1e-3
    max_delta: float = 1e-2
    small_time_width: float = 0.01
    # sdtt
    distil_prob: float = 0.3
    distil_time: float = 0.02
    time_grid: int = 1024
    # maskgit
    r_delta: float = 0.05
    r_temp: float = 4.5
    teacher_steps: int = 8

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown Di4C scheme {self.scheme!r}; choose one of {SCHEMES}")
        if self.num_lambda < 1 or (self.num_composition is not None and self.num_composition < 1):
            raise ValueError(f"num_lambda and num_composition must be >= 1, got {self.num_lambda}, "
                             f"{self.num_composition}")
        if not 0.0 < self.min_delta <= self.max_delta < 1.0 - self.min_time:
            raise ValueError(f"need 0 < min_delta <= max_delta < 1 - min_time, got {self.min_delta}, "
                             f"{self.max_delta}, {self.min_time}")
        if not 0.0 < self.r_delta < 1.0 or self.teacher_steps < 2:
            raise ValueError(f"need 0 < r_delta < 1 and teacher_steps >= 2, got {self.r_delta}, {self.teacher_steps}")

    @property
    def num_samples_composition(self) -> int:
        """M: composition samples per item."""
        return self.num_lambda if self.num_composition is None else self.num_composition


_PRESETS = {
    # reference-tauldr.md section 5: N = 16, sigmoid time weight with coefficient 1.
    "tauldr": dict(scheme="tauldr", num_lambda=16, time_coeff_scale=1.0),
    # reference-masked.md A4/A6: latent_bsize 16, alpha_const 0.1.
    "sdtt": dict(scheme="sdtt", num_lambda=16, time_coeff_scale=0.1),
    # reference-masked.md B4/B5: latent_bsize 32, alpha_const 0.1.
    "maskgit": dict(scheme="maskgit", num_lambda=32, time_coeff_scale=0.1),
}


def di4c_config(preset: str, **overrides) -> Di4CConfig:
    """Reference settings for `preset` in ('tauldr', 'sdtt', 'maskgit'), with any field overridden by keyword."""
    if preset not in _PRESETS:
        raise ValueError(f"unknown Di4C preset {preset!r}; choose one of {tuple(_PRESETS)}")
    fields = {f.name for f in dataclasses.fields(Di4CConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown Di4CConfig field(s) {sorted(unknown)}; valid fields: {sorted(fields)}")
    return Di4CConfig(**{**_PRESETS[preset], **overrides})
