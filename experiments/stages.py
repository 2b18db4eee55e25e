"""The experiment stages: train_teacher, distill (rounds 1..R), sample. Evaluation lives in evaluation.py.

Workdir layout: teacher/, student/ (round 1), student<r>/ (round r >= 2: di4c^2, multi-round SDTT) each with
checkpoints/, metrics.jsonl and TensorBoard events; samples/<model>_<n>steps.npy ([num, D] int tokens, one file per model and
step count) with .png grids / .txt; results.json / results.md from evaluation.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from di4c_jax import losses, sampling
from di4c_jax.losses.cdm import CDMConfig, cdm_loss
from di4c_jax.losses.sdtt import SDTTConfig, sdtt_loss, sdtt_round_dt
from di4c_jax.losses.teacher import TeacherLossConfig, teacher_loss
from di4c_jax.models import registry
from di4c_jax.train import distillation_loss_fn, teacher_loss_fn
from experiments import training
from experiments.setup import Setup, model_config



def student_name(round_index: int) -> str:
    """'student' for round 1, 'student<r>' for round r >= 2 (also the workdir subdirectory and sample prefix)."""
    if round_index < 1:
        raise ValueError(f"distillation rounds are 1-based, got {round_index}")
    return "student" if round_index == 1 else f"student{round_index}"


def num_rounds(config) -> int:
    rounds = config.distill.get("rounds", 1)
    if rounds < 1:
        raise ValueError(f"config.distill.rounds must be >= 1, got {rounds}")
    return rounds


def denoiser(model_cfg):
    """(apply, init_params(key)) of a model config, without allocating parameters."""
    abstract_model = nnx.eval_shape(lambda: registry.build_model(model_cfg, jax.random.key(0)))
    graphdef, abstract, _ = registry.split_params(abstract_model)
    return registry.make_apply(graphdef, abstract), functools.partial(registry.init_params, model_cfg)


def distillation_objective(cfg, round_index: int):
    """(loss function with di4c_loss's calling convention, its static config) for config.distill."""
    overrides = dict(cfg.get("loss", {}))
    mixture_teacher = round_index > 1
    if cfg.objective == "sdtt" and round_index > 1:
        # Multi-round SDTT: the teacher step doubles every round (the round-r student takes 2^r round-1 dt's).
        first = SDTTConfig(**overrides)
        overrides["dt"] = sdtt_round_dt(round_index, first.dt, first.num_teacher_steps)
    if cfg.objective == "di4c":
        return losses.di4c_loss, losses.di4c_config(cfg.preset, teacher_is_mixture=mixture_teacher, **overrides)
    if cfg.objective == "sdtt":
        return sdtt_loss, SDTTConfig(student_mixture=True, teacher_is_mixture=mixture_teacher, **overrides)
    if cfg.objective == "cdm":
        return cdm_loss, CDMConfig(student_mixture=True, teacher_is_mixture=mixture_teacher, **overrides)
    raise ValueError(f"unknown distillation objective {cfg.objective!r}; choose di4c, sdtt or cdm")


def teacher_dir(setup: Setup) -> Path:
    """<workdir>/teacher, or <config.teacher_workdir>/teacher to share one trained teacher between experiments."""
    shared = setup.config.get("teacher_workdir", "")
    return Path(shared) / "teacher" if shared else setup.workdir / "teacher"


def train_teacher(setup: Setup):
    config = setup.config
    apply, init = denoiser(model_config(setup, student=False))
    loss_cfg = TeacherLossConfig(**config.teacher.get("loss", {}))
    loss_fn = teacher_loss_fn(teacher_loss, apply, setup.process, config=loss_cfg)
    return training.run_stage(teacher_dir(setup), config, config.teacher, init_params=init,
                              loss_fn=loss_fn, source=setup.train_source, conditional=setup.conditional,
                              null_class=setup.null_class, num_states=setup.info.vocab_size)


def load_teacher(setup: Setup, weights: str | None = None):
    """(apply, params, is_mixture=False) of the trained teacher; weights 'ema' or 'raw' (default:
    config.distill.teacher_weights, 'ema' as in the references)."""
    apply, init = denoiser(model_config(setup, student=False))
    state = training.load_stage(teacher_dir(setup), setup.config, setup.config.teacher, init)
    weights = weights or setup.config.distill.get("teacher_weights", "ema")
    return apply, state["ema_params" if weights == "ema" else "params"], False


def load_student(setup: Setup, round_index: int = 1, weights: str = "ema"):
    """(apply, params, is_mixture=True) of a distilled student (EMA weights by default)."""
    apply, init = denoiser(model_config(setup, student=True))
    state = training.load_stage(setup.workdir / student_name(round_index), setup.config, setup.config.distill,
                                init)
    return apply, state["ema_params" if weights == "ema" else "params"], True


def distill(setup: Setup, round_index: int = 1):
    """Round 1: teacher -> mixture student. Round r >= 2 (di4c^2, multi-round SDTT): the round r-1 student is the
    (mixture) teacher and the student starts from it. The student starts from the weights named by config.distill.init_from ('raw',
    the reference's choice, or 'ema'); its new lambda parameters are zero-initialised."""
    config = setup.config
    init_from = config.distill.get("init_from", "raw")
    if round_index == 1:
        teacher_apply, teacher_params, _ = load_teacher(setup)
        start = load_teacher(setup, weights=init_from)[1]
    else:
        teacher_apply, teacher_params, _ = load_student(setup, round_index - 1)
        start = load_student(setup, round_index - 1, weights=init_from)[1]
    student_apply, student_init = denoiser(model_config(setup, student=True))
    start = jax.device_get(start)

    def init_params(key):
        return registry.init_student_from_teacher(start, student_init(key), allow_unused=round_index > 1)

    loss, loss_cfg = distillation_objective(config.distill, round_index)
    loss_fn = distillation_loss_fn(loss, student_apply, teacher_apply, setup.process, loss_cfg)
    return training.run_stage(setup.workdir / student_name(round_index), config, config.distill,
                              init_params=init_params, loss_fn=loss_fn, source=setup.train_source,
                              frozen=teacher_params, conditional=setup.conditional, null_class=setup.null_class,
                              num_states=setup.info.vocab_size, seed_offset=round_index)


# ----------------------------------------------------------------------------------------------- sampling


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    name: str  # teacher | student | student<r> | hybrid
    num_steps: int
    teacher_steps: int = 0  # hybrid: the teacher's share of the steps (incl. the final one)

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.num_steps}steps"


def sample_specs(config, available: set[str]) -> list[SampleSpec]:
    cfg = config.sample
    specs = [SampleSpec("teacher", n) for n in cfg.teacher_steps]
    # Round 1 and the final round (the intermediate rounds of a long SDTT schedule are only stepping stones).
    for name in dict.fromkeys((student_name(1), student_name(num_rounds(config)))):
        if name in available:
            specs += [SampleSpec(name, n) for n in cfg.student_steps]
    if "student" in available:
        specs += [SampleSpec("hybrid", n, k) for n, k in cfg.get("hybrid", [])]
    return specs


def _make_sampler(setup: Setup, spec: SampleSpec, nets: dict, batch: int):
    cfg = setup.config.sample
    shape = (batch, setup.num_dims)
    if spec.name == "hybrid":
        (s_apply, _, s_mix), (t_apply, _, t_mix) = nets["student"], nets["teacher"]
        return sampling.make_analytic_sampler(setup.process, s_apply, shape=shape, num_steps=spec.num_steps,
                                              mixture=s_mix, teacher_apply=t_apply,
                                              teacher_steps=spec.teacher_steps, teacher_mixture=t_mix,
                                              final=cfg.get("final"))
    apply, _, mixture = nets[spec.name]
    if cfg.get("sampler", "analytic") == "maskgit":
        return sampling.make_maskgit_sampler(apply, shape=shape, mask_id=setup.process.mask_id,
                                             num_steps=spec.num_steps, guidance=cfg.get("guidance", 0.0),
                                             null_class=setup.null_class if setup.conditional else None,
                                             r_temp=cfg.get("r_temp", 4.5), mixture=mixture)
    return sampling.make_analytic_sampler(setup.process, apply, shape=shape, num_steps=spec.num_steps,
                                          mixture=mixture, final=cfg.get("final"))


def sample_labels(setup: Setup, num: int) -> np.ndarray | None:
    """Class labels of the generated samples (balanced), or None for unconditional models."""
    return (np.arange(num) % setup.info.num_classes).astype(np.int32) if setup.conditional else None


def save_preview(setup: Setup, tokens: np.ndarray, stem: Path, count: int = 64) -> None:
    """A PNG grid of the first `count` samples (image data, shape (C, H, W)) or their decoded text (.txt)."""
    shape = tuple(setup.info.shape)
    if setup.info.decode is not None:
        stem.with_suffix(".txt").write_text("\n---\n".join(setup.info.decode(row) for row in tokens[:count]))
    elif len(shape) == 3:
        from PIL import Image

        c, h, w = shape
        imgs = tokens[:count].reshape(-1, c, h, w).transpose(0, 2, 3, 1)
        side = int(np.ceil(np.sqrt(len(imgs))))
        grid = np.zeros((side * (h + 1), side * (w + 1), c), np.float32)
        for i, img in enumerate(imgs):
            r, q = divmod(i, side)
            grid[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = img
        grid = (255 * grid / max(setup.info.vocab_size - 1, 1)).astype(np.uint8)
        Image.fromarray(grid[..., 0] if c == 1 else grid).resize(
            (grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(stem.with_suffix(".png"))


def trained_networks(setup: Setup) -> dict:
    nets = {"teacher": load_teacher(setup)}
    for round_index in dict.fromkeys((1, num_rounds(setup.config))):
        if (setup.workdir / student_name(round_index) / "checkpoints").exists():
            nets[student_name(round_index)] = load_student(setup, round_index)
    return nets


def sample(setup: Setup):
    """Generate config.sample.num_samples per model and step count; returns {filename: seconds}."""
    cfg = setup.config.sample
    out = setup.workdir / "samples"
    out.mkdir(parents=True, exist_ok=True)
    nets = trained_networks(setup)
    labels = sample_labels(setup, cfg.num_samples)
    timings = {}
    for idx, spec in enumerate(sample_specs(setup.config, set(nets))):
        path = out / f"{spec.filename}.npy"
        if path.exists():
            continue
        batch = min(cfg.batch_size, cfg.num_samples)
        sampler = _make_sampler(setup, spec, nets, batch)
        params = nets["student" if spec.name == "hybrid" else spec.name][1]
        teacher_params = nets["teacher"][1] if spec.name == "hybrid" else None
        key = jax.random.fold_in(jax.random.key(setup.config.seed + 99), idx)
        chunks, start = [], time.perf_counter()
        for i in range(0, cfg.num_samples, batch):
            cond = None if labels is None else jnp.asarray(labels[i:i + batch])
            if cond is not None and cond.shape[0] < batch:
                cond = jnp.pad(cond, (0, batch - cond.shape[0]))
            chunks.append(np.asarray(sampler(jax.random.fold_in(key, i), params, teacher_params, cond)))
        tokens = np.concatenate(chunks)[:cfg.num_samples].astype(np.int32)
        timings[spec.filename] = time.perf_counter() - start
        np.save(path, tokens)
        save_preview(setup, tokens, out / spec.filename)
        (out / f"{spec.filename}.json").write_text(json.dumps(
            {"model": spec.name, "num_steps": spec.num_steps, "nfe": sampler.nfe, "teacher_nfe": sampler.teacher_nfe,
             "seconds": timings[spec.filename], "num_samples": cfg.num_samples}))
    return timings
