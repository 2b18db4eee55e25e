"""The three Di4C recipes: one frozen config per reference implementation, holding only what that recipe reads.

A recipe fixes how times are drawn, which teacher step t -> u is taken and how the loss terms are weighted:
  tauldr   the CIFAR-10 recipe (`DistilChain` in sony/di4c:tauldr/lib/losses/losses.py):
           delta ~ LogUniform[min_delta, max_delta], t ~ U[min_time + delta, 1], u = t - delta; analytic teacher
           step; time_coeff = time_coeff_scale * sigmoid(20 (t - 0.5)); distillation on its own small-time batch at
           t' = min_time + Bern(1/2) U small_time_width, `num_small_time` copies per item (None: N, as the
           reference); consistency weight 1.
  sdtt     the OpenWebText recipe (`di4c_loss` in sony/di4c:sdtt/src/sdtt/core/distill/multi_round_sdtt.py):
           per-sample t (w.p. distil_prob U[0, distil_time], else U[distil_time, 1]) snapped to a grid of
           `num_time_bins` bins; u = t - min(1/num_time_bins, t/2); ancestral teacher step; distillation at the same
           x_t where t < distil_time, consistency elsewhere.
  maskgit  the ImageNet recipe (`train_di4c` in sony/di4c:maskgit-pytorch/Trainer/vit.py): progress r ~ U[0, 1),
           t = 1 - r (an absorbing process, arccos schedule); MaskGIT confidence step r -> r + r_delta with Gumbel
           temperature r_temp (1 - r sampler_steps / (sampler_steps - 1)) (negative for r > (sampler_steps - 1) /
           sampler_steps, as in the reference); distillation with weight 1/r_delta where r >= 1 - r_delta,
           consistency elsewhere.
Every recipe's defaults are its reference's (N = 16 and time weight 1 for tauldr; N = 16 and 0.1 for sdtt; N = 32 and
0.1 for maskgit). Shared fields: `num_lambda` N (student lambdas at t), `num_composition` M (teacher steps, u-side
passes and composition samples per item; None: M = N), `control_variate`, `student_dropout` (rngs for the student's
gradient passes; the u-side target pass is always deterministic), `time_coeff_scale` and `time_coeff_floor` (the data
correlation weight is scale * (floor + (1 - floor) sigmoid(20 (t - 0.5))); floor 0, the references' form, all but
switches the data term off below t = 0.5, floor 1 weighs it equally at every t), and `chunk`: how many of the N
t-side lambdas (and of the M composition copies) one network call takes (`losses.chunked`: memory flat in N; None
picks the most whose [B, chunk, D, K] log-probabilities, B the global batch as jit sees it, fit the backend's
budget, 4 MiB on CPU and 64 MiB on GPU/TPU (`chunked.default_chunk`); chunk >= N is the plain, unchunked pass).

Reference distributions r_t (shared fields; Hayakawa et al. 2025 take the consistency loss over x_t ~ r_t, which may
be the data's q_t or the law reached by multi-step denoising; `losses.reference`): each item's x_t is drawn from
the data with probability 1 - reference_teacher - reference_student, from the teacher's own `reference_teacher_steps`-
step trajectory from t = 1 down to the item's t with probability `reference_teacher`, and from the student's own
(on-policy) `reference_student_steps`-step trajectory with probability `reference_student`. A trajectory item's
x_t has no data point behind it, so its data correlation term is dropped (time_coeff 0). `consis_weighting`
multiplies every recipe's consistency weight by w(t): 'uniform' 1, 'linear' 2 t, 'late' 3 t^2 (mean 1 under
t ~ U[0, 1]), and `consis_scale` by a constant (0 leaves the data and distillation terms alone: an ablation).
`consis_coupling` a in [0, 1] takes that share of the consistency term per component: the student's t-side lambdas
n < M are the u-side ones, and (1 - a) KL(composition || mixture) becomes (1 - a) of it plus a times the
cross-entropy of each composition sample x_hat_m under the t-side component of the lambda that drew it. a = 1 is
(up to the samples' entropy) E_lam KL(composition_lam || student_t(lam)), an upper bound on the mixture KL (joint
convexity); it asks each component to be consistent with itself across t, which one lambda per sampling trajectory
(`sampling` option `share_lam`) relies on. It needs a mixture student and M <= N. `jackknife` replaces the N-sample
log mixture density F (- G) at x0 and at the composition samples, biased low by O(1/N), by its jackknife estimate
(bias O(1/N^2); `losses.mixture.mixture_log_density_at`), at no network cost. The defaults (0, 0, 'uniform', 1, 0,
False) are the references' behaviour.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from di4c_jax.losses.reference import check_reference_settings
from di4c_jax.processes.confidence import confidence_step
from di4c_jax.processes.protocol import require
from di4c_jax.registry import Registry


class DrawnTimes(NamedTuple):
    """Per-item times and weights of one Di4C batch, all float32[B]. w_distil None: no same-x_t distillation."""

    t: jax.Array
    u: jax.Array
    time_coeff: jax.Array
    w_distil: jax.Array | None
    w_consis: jax.Array


RECIPES: Registry[type] = Registry("Di4C recipe")

# w(t) multiplying the consistency weight; None: weight 1 (the references)
CONSIS_WEIGHTINGS = {"uniform": None, "linear": lambda t: 2.0 * t, "late": lambda t: 3.0 * t * t}


@dataclasses.dataclass(frozen=True)
class Di4CRecipe:
    """Fields every recipe shares; subclasses add theirs and implement `recipe_times`."""

    num_lambda: int = 16
    num_composition: int | None = None
    control_variate: bool = True
    student_dropout: bool = True
    time_coeff_scale: float = 1.0
    time_coeff_floor: float = 0.0  # 0: the references' sigmoid(20 (t - 0.5)); 1: constant in t
    chunk: int | None = None  # lambdas per student t-side call (memory flat in N); None: from the shapes
    reference_teacher: float = 0.0  # probability that an item's x_t comes from the teacher's trajectory
    reference_student: float = 0.0  # ... from the student's own trajectory (data: 1 - the two)
    reference_teacher_steps: int = 8  # steps of that trajectory from t = 1 down to the item's t
    reference_student_steps: int = 2
    consis_weighting: str = "uniform"  # w(t) on the consistency weight: a key of CONSIS_WEIGHTINGS
    consis_scale: float = 1.0  # a constant factor on the consistency weight (0: no consistency term)
    consis_coupling: float = 0.0  # share of the consistency term taken per component (same lambda at u and t)
    jackknife: bool = False  # jackknife the N-sample log mixture densities F (- G): bias O(1/N^2), not O(1/N)

    name: ClassVar[str] = ""
    small_time_distillation: ClassVar[bool] = False  # tauldr: a separate small-time distillation batch

    def __post_init__(self):
        if self.num_lambda < 1 or (self.num_composition is not None and self.num_composition < 1):
            raise ValueError(f"{self.name}: num_lambda and num_composition must be >= 1, got {self.num_lambda}, "
                             f"{self.num_composition}")
        if not 0.0 <= self.time_coeff_floor <= 1.0:
            raise ValueError(f"{self.name}: time_coeff_floor must be in [0, 1], got {self.time_coeff_floor}")
        # With the control variate the data term is c (G - F) + KL(teacher || m); where the teacher's marginals are
        # the data's q, its expectation over x0 holds (1 - c) CE(q, m) in the mixture marginals m, so c > 1 rewards
        # marginals far from the data's (quickstart, uniform process, c = 3: marginal KL 11 nats, TV 0.78).
        if self.control_variate and not 0.0 <= self.time_coeff_scale <= 1.0:
            raise ValueError(f"{self.name}: time_coeff_scale must be in [0, 1] with the control variate (above 1 the "
                             f"data term rewards wrong marginals), got {self.time_coeff_scale}")
        if self.chunk is not None and self.chunk < 1:
            raise ValueError(f"{self.name}: chunk must be None or >= 1, got {self.chunk}")
        check_reference_settings(self, f"{self.name}: ")
        if not self.consis_scale >= 0.0:
            raise ValueError(f"{self.name}: consis_scale must be >= 0, got {self.consis_scale}")
        if not 0.0 <= self.consis_coupling <= 1.0:
            raise ValueError(f"{self.name}: consis_coupling must be in [0, 1], got {self.consis_coupling}")
        if self.consis_coupling > 0 and self.num_samples_composition > self.num_lambda:
            raise ValueError(f"{self.name}: consis_coupling > 0 pairs composition copy m with t-side lambda m, so it "
                             f"needs num_composition <= num_lambda, got {self.num_composition} > {self.num_lambda}")
        if self.jackknife and self.num_lambda < 2:
            raise ValueError(f"{self.name}: jackknife leaves one of the N lambdas out, so it needs num_lambda >= 2, "
                             f"got {self.num_lambda}")
        if self.consis_weighting not in CONSIS_WEIGHTINGS:
            raise ValueError(f"{self.name}: consis_weighting must be one of {sorted(CONSIS_WEIGHTINGS)}, got "
                             f"{self.consis_weighting!r}")

    @property
    def num_samples_composition(self) -> int:
        """M: composition samples per item."""
        return self.num_lambda if self.num_composition is None else self.num_composition

    def check_process(self, process) -> None:
        """Raise if the recipe cannot run on `process`."""

    def draw_times(self, key: jax.Array, batch: int) -> DrawnTimes:
        """The recipe's times and weights (`recipe_times`), w_consis multiplied by `consis_scale` times
        `consis_weighting`'s w(t)."""
        times = self.recipe_times(key, batch)
        weight = CONSIS_WEIGHTINGS[self.consis_weighting]
        w_consis = times.w_consis if weight is None else times.w_consis * weight(times.t)
        return times._replace(w_consis=w_consis * self.consis_scale)  # x * 1.0 is exact: defaults unchanged

    def recipe_times(self, key: jax.Array, batch: int) -> DrawnTimes:
        """The recipe's own draw of DrawnTimes for `batch` items (before the consistency time weighting)."""
        raise NotImplementedError

    def teacher_step(self, key, process, x_t, logp, t, u) -> jax.Array:
        """One teacher step x_t -> x_u int32[B, D] from the teacher's log p(x0 | x_t) [B, D, K]."""
        return process.reverse_step(key, x_t, logp, t, u)

    def time_coeff(self, t: jax.Array) -> jax.Array:
        floor = self.time_coeff_floor
        return self.time_coeff_scale * (floor + (1.0 - floor) * jax.nn.sigmoid(20.0 * (t - 0.5)))


@RECIPES.register("tauldr")
@dataclasses.dataclass(frozen=True)
class TauLDRRecipe(Di4CRecipe):
    min_time: float = 0.01
    min_delta: float = 1e-3
    max_delta: float = 1e-2
    small_time_width: float = 0.01
    num_small_time: int | None = None  # copies per item in the small-time distillation batch; None: num_lambda

    name: ClassVar[str] = "tauldr"
    small_time_distillation: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        if self.num_small_time is not None and self.num_small_time < 1:
            raise ValueError(f"tauldr: num_small_time must be None or >= 1, got {self.num_small_time}")
        if not 0.0 < self.min_delta <= self.max_delta < 1.0 - self.min_time:
            raise ValueError(f"tauldr: need 0 < min_delta <= max_delta < 1 - min_time, got {self.min_delta}, "
                             f"{self.max_delta}, {self.min_time}")

    @property
    def num_samples_small_time(self) -> int:
        """Copies per item of the small-time distillation batch (each its own x_t', t' and lambda)."""
        return self.num_lambda if self.num_small_time is None else self.num_small_time

    def recipe_times(self, key, batch):
        k1, k2, _ = jax.random.split(key, 3)
        log_ratio = math.log(self.max_delta / self.min_delta)
        delta = self.min_delta * jnp.exp(jax.random.uniform(k1, (batch,)) * log_ratio)
        t = jax.random.uniform(k2, (batch,)) * (1.0 - self.min_time - delta) + self.min_time + delta
        return DrawnTimes(t, t - delta, self.time_coeff(t), None, jnp.ones((batch,), jnp.float32))


@RECIPES.register("sdtt")
@dataclasses.dataclass(frozen=True)
class SDTTRecipe(Di4CRecipe):
    time_coeff_scale: float = 0.1
    distil_prob: float = 0.3
    distil_time: float = 0.02
    num_time_bins: int = 1024

    name: ClassVar[str] = "sdtt"

    def __post_init__(self):
        super().__post_init__()
        if not (0.0 <= self.distil_prob <= 1.0 and 0.0 < self.distil_time < 1.0 and self.num_time_bins >= 1):
            raise ValueError(f"sdtt: need distil_prob in [0, 1], distil_time in (0, 1), num_time_bins >= 1; got "
                             f"{self.distil_prob}, {self.distil_time}, {self.num_time_bins}")

    def recipe_times(self, key, batch):
        # One snap to the grid; the reference snaps a second time when it masks (mask rate (1 - eps)(t + 1/T)),
        # which is not reproduced here: x_t is drawn at the snapped t.
        k1, k2, _ = jax.random.split(key, 3)
        small = jax.random.bernoulli(k1, self.distil_prob, (batch,))
        v = jax.random.uniform(k2, (batch,))
        t_raw = jnp.where(small, self.distil_time * v, self.distil_time + (1.0 - self.distil_time) * v)
        bins = self.num_time_bins
        t = (jnp.floor(bins * t_raw) + 1.0) / bins
        u = t - jnp.minimum(1.0 / bins, t / 2)
        w_distil = (t < self.distil_time).astype(jnp.float32)
        return DrawnTimes(t, u, self.time_coeff(t), w_distil, (w_distil == 0).astype(jnp.float32))


@RECIPES.register("maskgit")
@dataclasses.dataclass(frozen=True)
class MaskGITRecipe(Di4CRecipe):
    num_lambda: int = 32
    time_coeff_scale: float = 0.1
    r_delta: float = 0.05
    r_temp: float = 4.5
    sampler_steps: int = 8

    name: ClassVar[str] = "maskgit"

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.r_delta < 1.0 or self.sampler_steps < 2:
            raise ValueError(f"maskgit: need 0 < r_delta < 1 and sampler_steps >= 2, got {self.r_delta}, "
                             f"{self.sampler_steps}")

    def check_process(self, process):
        require(process, "absorbing", "the maskgit Di4C recipe")

    def recipe_times(self, key, batch):
        _, _, k3 = jax.random.split(key, 3)
        r = jax.random.uniform(k3, (batch,))
        t, u = 1.0 - r, 1.0 - jnp.minimum(r + self.r_delta, 1.0)
        w_distil = (r >= 1.0 - self.r_delta).astype(jnp.float32) / self.r_delta
        return DrawnTimes(t, u, self.time_coeff(t), w_distil, (w_distil == 0).astype(jnp.float32))

    def teacher_step(self, key, process, x_t, logp, t, u):
        dims = x_t.shape[1]
        n_masked = jnp.sum(x_t == process.mask_id, axis=1)
        num_reveal = jnp.clip(jnp.trunc((1.0 - process.mask_prob(u)) * dims - (dims - n_masked)), 0, n_masked)
        ratio = (1.0 - t) * self.sampler_steps / (self.sampler_steps - 1)
        return confidence_step(key, x_t=x_t, logits=logp, num_reveal=num_reveal.astype(jnp.int32),
                               gumbel_temp=self.r_temp * (1.0 - ratio), mask_id=process.mask_id)


RENAMED_FIELDS = {"time_grid": "num_time_bins (sdtt)", "teacher_steps": "sampler_steps (maskgit)",
                  "teacher_is_mixture": "the teacher Denoiser's `mixture`"}


def di4c_config(preset: str, **overrides) -> Di4CRecipe:
    """The recipe `preset` ('tauldr' | 'sdtt' | 'maskgit') with its reference defaults, fields overridden by keyword.

    A field of another recipe, or no recipe at all, is an error naming it.
    """
    cls = RECIPES.get(preset)
    fields = {f.name for f in dataclasses.fields(cls)}
    for name in sorted(set(overrides) - fields):
        owners = [n for n in RECIPES.names() if name in {f.name for f in dataclasses.fields(RECIPES.get(n))}]
        if owners:
            where = f"it belongs to the {' / '.join(owners)} recipe"
        elif name in RENAMED_FIELDS:
            where = f"it is now {RENAMED_FIELDS[name]}"
        else:
            where = "no recipe has it"
        raise ValueError(f"field {name!r} does not apply to the {preset} Di4C recipe ({where}); "
                         f"{preset} fields: {sorted(fields)}")
    return cls(**overrides)
