"""Checks on an experiment's inputs that `experiments.run.run` makes before it writes anything into the workdir.

Each raises ValueError / FileNotFoundError / NotADirectoryError naming the field or path, its value and what is
expected; the command line prints that one line (experiments.cli). The config's own fields are checked when it is
resolved (experiments.spec); these are the checks that need the file system, the devices or the data.
"""
from __future__ import annotations

from pathlib import Path

import jax

from di4c_jax import parallel
from di4c_jax.models import registry
from di4c_jax.train.checkpoint import latest_shapes, path_shapes
from experiments.released import released_dir
from experiments.spec import Experiment


def workdir_usable(workdir: Path) -> None:
    """The workdir is a directory or does not exist yet."""
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(f"--workdir {workdir} is a file; expected a directory (a new one, or a run's "
                                 f"workdir to resume)")


def shared_teacher(exp: Experiment) -> None:
    """config.teacher_workdir, when set, is a run's workdir holding a trained teacher (teacher/checkpoints/<step>)."""
    if not exp.teacher_workdir:
        return
    path = Path(exp.teacher_workdir)
    if not path.is_dir():
        raise FileNotFoundError(f"config.teacher_workdir={exp.teacher_workdir!r}: no such directory; expected the "
                                f"workdir of a run that trained its teacher")
    if released_dir(path / "teacher") is None and latest_shapes(path / "teacher" / "checkpoints") is None:
        raise FileNotFoundError(f"config.teacher_workdir={exp.teacher_workdir!r} holds no teacher checkpoint (no "
                                f"{path / 'teacher' / 'checkpoints'}/<step>); expected the workdir of a run that "
                                f"trained its teacher, or one written by experiments.convert")


def mesh_fits(exp: Experiment) -> None:
    """The mesh the run builds (`parallel.make_mesh(fsdp=config.mesh.fsdp)`) exists on these devices, and every
    training batch splits evenly over it (the batch is sharded over both mesh axes, so over every device)."""
    try:
        mesh = parallel.make_mesh(fsdp=exp.fsdp)
    except ValueError as err:
        raise ValueError(f"config.mesh.fsdp={exp.fsdp} does not fit the {jax.device_count()} device(s): {err}") \
            from None
    for what, batch in (("teacher.batch_size", exp.teacher.train.batch_size),
                        ("distill.batch_size", exp.distill.train.batch_size)):
        if batch % mesh.size:
            raise ValueError(f"config.{what}={batch} is not divisible by the mesh's data axes "
                             f"({mesh.shape['data']} data x {exp.fsdp} fsdp = {mesh.size} devices, each takes an "
                             f"equal share); use a multiple of {mesh.size}")


def checkpoints_fit(setup) -> None:
    """Every checkpoint this run would resume from or load (the teacher's, shared or not; this workdir's students)
    holds networks of this experiment's parameter shapes, so another architecture or vocabulary is named before
    training instead of failing inside Orbax."""
    from experiments.stages import model_config, student_name, teacher_dir

    model_config(setup, student=False)  # a released teacher (experiments.convert) checks that the data fits it
    stage_dirs = [("teacher", teacher_dir(setup), False)]
    stage_dirs += [(student_name(r), setup.workdir / student_name(r), True)
                   for r in range(1, setup.exp.distill.rounds + 1)]
    for name, stage_dir, student in stage_dirs:
        found = latest_shapes(stage_dir / "checkpoints")
        if found is None:
            continue
        step, there = found
        here = path_shapes(registry.abstract_params(model_config(setup, student)))
        if there != here:
            k, d = setup.process.num_states, setup.num_dims
            raise ValueError(f"{stage_dir}: its checkpoint (step {step}) holds a {name} of another architecture or "
                             f"vocabulary than this experiment's (K={k} states, D={d}; "
                             f"{shape_difference(there, here, k)}); use a new --workdir, or the config and data "
                             f"that trained it")


def shape_difference(there: dict[str, tuple], here: dict[str, tuple], num_states: int = 0) -> str:
    """The first difference between two `path_shapes` maps, in words; a parameter with a dimension of
    `num_states` (an embedding: the vocabulary) is named first."""
    common = sorted(set(there) & set(here), key=lambda path: (num_states not in here[path], path))
    for path in common:
        if there[path] != here[path]:
            return f"parameter {path} has shape {there[path]} there, {here[path]} here"
    only_there, only_here = sorted(set(there) - set(here)), sorted(set(here) - set(there))
    return f"parameters only there: {only_there[:3]}, only here: {only_here[:3]}"
