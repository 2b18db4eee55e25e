"""The experiment stages, run in order by experiments.run: train_teacher -> distill (rounds 1..R) -> sample.
Evaluation lives in evaluation.py.

Each stage trains (or resumes) and hands the next a `Trained` network. Workdir layout: teacher/, student/ (round 1),
student<r>/ (round r >= 2: di4c^2, multi-round SDTT) each with checkpoints/, metrics.jsonl and TensorBoard events;
samples/<model>_<n>steps.npy ([num, D] int tokens) with .json metadata and .png grids / .txt; results.json / .md.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from di4c_jax import Denoiser, parallel
from di4c_jax.losses.teacher import teacher_loss
from di4c_jax.models import registry
from di4c_jax.sampling import SAMPLERS
from di4c_jax.train import Round, distill_rounds, preemption, teacher_loss_fn
from experiments import released, training
from experiments.setup import Setup


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained network: its name in the workdir ('teacher', 'student', 'student<r>'), Denoiser and params."""

    name: str
    denoiser: Denoiser
    params: Any


def student_name(round_index: int) -> str:
    """'student' for round 1, 'student<r>' for round r >= 2 (also the workdir subdirectory and sample prefix)."""
    if round_index < 1:
        raise ValueError(f"distillation rounds are 1-based, got {round_index}")
    return "student" if round_index == 1 else f"student{round_index}"


def model_config(setup: Setup, student: bool):
    """The teacher's (student=False) or student's model ConfigDict; the student adds the lambda input.

    With a released teacher (`experiments.convert`) the network is the file's, whatever `model.size` says."""
    spec = setup.exp.model
    found = released.released_dir(teacher_dir(setup))
    if found is not None:
        cfg = released.teacher_config(found)
        released.check_fits(cfg, num_states=setup.process.num_states, num_dims=setup.num_dims, where=found)
        if student:
            cfg = released.student_config(cfg, lam_style=spec.lam_style, lam_zero_init=spec.lam_zero_init,
                                          lam_blocks=spec.lam_blocks, local_latents=spec.local_latents,
                                          local_block=spec.local_block)
        return ml_collections.ConfigDict(cfg)
    overrides = dict(spec.overrides, remat=spec.remat,
                     compute_dtype=None if spec.compute_dtype == "float32" else spec.compute_dtype)
    kind = registry.model_config(spec.size).kind
    if kind == "unet":
        channels, resolution = setup.info.shape[0], setup.info.shape[-1]
        overrides.update(num_states=setup.process.num_states, channels=channels, resolution=resolution)
    else:
        overrides.update(num_states=setup.process.num_states, num_positions=setup.num_dims)
        if setup.conditional:
            overrides["num_classes"] = setup.info.num_classes
    if student:
        overrides["lam_style"] = spec.lam_style or ("token" if kind == "dit" else "embed")
        released.check_local_latents(kind, spec.local_latents)
        if spec.local_latents:
            overrides.update(local_latents=spec.local_latents, local_block=spec.local_block)
        overrides["lam_zero_init"] = spec.lam_zero_init
        if spec.lam_blocks is not None:
            overrides["lam_blocks"] = spec.lam_blocks
    return registry.model_config(spec.size, **overrides)


def network(model_cfg) -> tuple[Denoiser, Any]:
    """(Denoiser, init_params(key)) of a model config, without allocating parameters."""
    return registry.make_denoiser(model_cfg), functools.partial(registry.init_params, model_cfg)


def teacher_dir(setup: Setup) -> Path:
    """<workdir>/teacher, or <teacher_workdir>/teacher to share one trained teacher between experiments."""
    shared = setup.exp.teacher_workdir
    return Path(shared) / "teacher" if shared else setup.workdir / "teacher"


def _null_class(setup: Setup) -> int | None:
    return setup.info.num_classes if setup.conditional else None


def train_teacher(setup: Setup, log=print) -> None:
    found = released.released_dir(teacher_dir(setup))
    if found is not None:
        log(f"teacher: released checkpoint {found} (nothing to train)")
        return
    spec = setup.exp.teacher
    denoiser, init = network(model_config(setup, student=False))
    loss_fn = teacher_loss_fn(teacher_loss, denoiser=denoiser, process=setup.process, config=spec.loss)
    training.run_stage(teacher_dir(setup), setup.exp, spec.train, init_params=init, loss_fn=loss_fn,
                       source=setup.train_source, null_class=_null_class(setup), num_states=setup.info.vocab_size)


def load_teacher(setup: Setup, weights: str | None = None) -> Trained:
    """The trained teacher; weights 'ema' or 'raw' (default: distill.teacher_weights)."""
    denoiser, init = network(model_config(setup, student=False))
    state = teacher_state(setup, init)
    weights = weights or setup.exp.distill.teacher_weights
    return Trained("teacher", denoiser, state["ema_params" if weights == "ema" else "params"])


def teacher_state(setup: Setup, init) -> dict:
    """The teacher's train state; a released teacher has one set of weights, as both 'params' and 'ema_params'."""
    found = released.released_dir(teacher_dir(setup))
    if found is None:
        return training.load_stage(teacher_dir(setup), setup.exp, setup.exp.teacher.train, init)
    _, params = released.load_released(found)
    return {"params": params, "ema_params": params}


def load_student(setup: Setup, round_index: int = 1, weights: str = "ema") -> Trained:
    """A distilled (mixture) student, EMA weights by default."""
    denoiser, init = network(model_config(setup, student=True))
    name = student_name(round_index)
    state = training.load_stage(setup.workdir / name, setup.exp, setup.exp.distill.train, init)
    return Trained(name, denoiser, state["ema_params" if weights == "ema" else "params"])


def distill(setup: Setup, log=print) -> None:
    """Rounds 1..distill.rounds (`di4c_jax.train.distill_rounds`): round 1 distils the teacher into a mixture
    student; round r >= 2 (di4c^2, multi-round SDTT) distils the round r-1 student. Each student starts from the
    previous network's weights named by distill.init_from; its new lambda parameters are zero-initialised."""
    spec = setup.exp.distill
    teacher, teacher_init = network(model_config(setup, student=False))
    state = teacher_state(setup, teacher_init)
    student, student_init = network(model_config(setup, student=True))

    def train_round(rnd: Round) -> dict:
        log(f"stage distill (round {rnd.index}, objective {spec.objective})")
        return training.run_stage(setup.workdir / student_name(rnd.index), setup.exp, spec.train,
                                  init_params=rnd.init_params, loss_fn=rnd.loss_fn, source=setup.train_source,
                                  frozen=rnd.teacher_params, null_class=_null_class(setup),
                                  num_states=setup.info.vocab_size, seed_offset=rnd.index)

    distill_rounds(train_round, objective=spec.objective, options=spec.loss, num_rounds=spec.rounds,
                   process=setup.process, teacher=teacher, teacher_state=state, student=student,
                   student_init=student_init, teacher_weights=spec.teacher_weights, init_from=spec.init_from)


def trained_networks(setup: Setup) -> dict[str, Trained]:
    """The teacher, and the round-1 and last-round students that have been trained."""
    nets = {"teacher": load_teacher(setup)}
    for round_index in dict.fromkeys((1, setup.exp.distill.rounds)):
        if (setup.workdir / student_name(round_index) / "checkpoints").exists():
            nets[student_name(round_index)] = load_student(setup, round_index)
    return nets


# ----------------------------------------------------------------------------------------------- sampling


@dataclasses.dataclass(frozen=True)
class SampleJob:
    name: str  # teacher | student | student<r> | hybrid
    num_steps: int
    teacher_last_steps: int = 0  # hybrid: the teacher's share of the steps (incl. the final one)

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.num_steps}steps"


def sample_jobs(setup: Setup, available: set[str]) -> list[SampleJob]:
    spec = setup.exp.sample
    jobs = [SampleJob("teacher", n) for n in spec.teacher_steps]
    # Round 1 and the final round (the intermediate rounds of a long SDTT schedule are only stepping stones).
    for name in dict.fromkeys((student_name(1), student_name(setup.exp.distill.rounds))):
        if name in available:
            jobs += [SampleJob(name, n) for n in spec.student_steps]
    if "student" in available:
        jobs += [SampleJob("hybrid", n, k) for n, k in spec.hybrid]
    return jobs


def make_sampler(setup: Setup, job: SampleJob, nets: dict[str, Trained], batch: int):
    """The registered sampler of sample.sampler for one job (hybrids: the analytic sampler, teacher last)."""
    spec = setup.exp.sample
    common = dict(process=setup.process, shape=(batch, setup.num_dims), num_steps=job.num_steps)
    if job.name == "hybrid":
        options = spec.options if spec.sampler == "analytic" else {}
        return SAMPLERS.get("analytic")(denoiser=nets["student"].denoiser, teacher=nets["teacher"].denoiser,
                                        teacher_last_steps=job.teacher_last_steps, **common, **options)
    return SAMPLERS.get(spec.sampler)(denoiser=nets[job.name].denoiser, **common, **spec.options)


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


def sample(setup: Setup, nets: dict[str, Trained]) -> dict[str, float]:
    """Generate sample.num_samples per model and step count; returns {filename: seconds} of the new files.

    Every process runs every sampler call (the networks may be sharded over all of them); process 0 writes."""
    spec = setup.exp.sample
    out = setup.workdir / "samples"
    out.mkdir(parents=True, exist_ok=True)
    labels = sample_labels(setup, spec.num_samples)
    jobs = sample_jobs(setup, set(nets))
    # what is left to do, as process 0 sees it (the others must run the same sampler calls)
    pending = parallel.agree(np.array([not (out / f"{job.filename}.npy").exists() for job in jobs], bool))
    timings = {}
    for idx, job in enumerate(jobs):
        if not pending[idx]:
            continue
        if parallel.agree(np.array([preemption.requested()], bool))[0]:
            raise preemption.Preempted(f"before sampling {job.filename} (finished sample files are kept)")
        batch = min(spec.batch_size, spec.num_samples)
        sampler = make_sampler(setup, job, nets, batch)
        params = nets["student" if job.name == "hybrid" else job.name].params
        teacher_params = nets["teacher"].params if job.name == "hybrid" else None
        key = jax.random.fold_in(jax.random.key(setup.exp.seed + 99), idx)
        chunks, start = [], time.perf_counter()
        for i in range(0, spec.num_samples, batch):
            cond = None if labels is None else jnp.asarray(labels[i:i + batch])
            if cond is not None and cond.shape[0] < batch:
                cond = jnp.pad(cond, (0, batch - cond.shape[0]))
            chunks.append(parallel.to_host(sampler(jax.random.fold_in(key, i), params=params,
                                                   teacher_params=teacher_params, cond=cond)))
        tokens = np.concatenate(chunks)[:spec.num_samples].astype(np.int32)
        timings[job.filename] = time.perf_counter() - start
        if parallel.is_writer():
            save_preview(setup, tokens, out / job.filename)
            (out / f"{job.filename}.json").write_text(json.dumps(
                {"model": job.name, "num_steps": job.num_steps, "nfe": sampler.nfe,
                 "teacher_nfe": sampler.teacher_nfe, "seconds": timings[job.filename],
                 "num_samples": spec.num_samples}))
            # the .npy marks the job done, so it is written last and atomically (a kill leaves no partial file)
            with open(out / f"{job.filename}.npy.tmp", "wb") as f:
                np.save(f, tokens)
            os.replace(out / f"{job.filename}.npy.tmp", out / f"{job.filename}.npy")
    parallel.barrier("samples written")  # the evaluate stage reads them on every process
    return timings
