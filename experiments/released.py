"""A released teacher inside a workdir: `<workdir>/teacher/released/` (our safetensors + config.json, and
source.json naming the file it came from), written by `experiments.convert` and used by the runner in place of a
trained teacher (`--config.teacher_workdir=<workdir>`).

With a released teacher the network comes from the file, not from `config.model.size`: the teacher's model config
is the file's, the student's is the same plus the lambda input, and the data must fit it (its K and D).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from di4c_jax import interop

RELEASED = "released"

# How each architecture's Di4C student takes lambda in the reference code (the default of `model.lam_style`).
REFERENCE_LAM_STYLE = {"dit": "token", "maskgit_v1": "token", "unet": "embed"}


def released_dir(teacher_dir: Path) -> Path | None:
    """`teacher_dir/released` if it holds a converted teacher, else None."""
    path = Path(teacher_dir) / RELEASED
    return path if (path / "config.json").is_file() else None


def write_released(denoiser, params, teacher_dir: Path, source: dict, *, overwrite: bool = False) -> Path:
    """Save a converted teacher into `teacher_dir/released` atomically (a temporary folder renamed into place)."""
    final = Path(teacher_dir) / RELEASED
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists: a teacher was converted into this workdir already (use a new --out, "
                              f"or --overwrite)")
    tmp = final.with_name(RELEASED + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    interop.save_checkpoint(denoiser, params, tmp)
    (tmp / "source.json").write_text(json.dumps({**source, "time": time.time()}, indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def load_released(path: Path):
    """(Denoiser, params) of a converted teacher."""
    return interop.load_checkpoint(path, "di4c")


def check_local_latents(kind: str | None, local_latents: int) -> None:
    """model.local_latents is a DiT student's option (di4c_jax.models.dit)."""
    if local_latents and kind != "dit":
        raise ValueError(f"model.local_latents={local_latents} applies to DiT students; this student is a {kind!r}")


def teacher_config(path: Path) -> dict:
    return interop.ours.load_model_config(path)


def student_config(teacher_cfg: dict, *, lam_style: str | None, lam_zero_init: bool,
                   lam_blocks: int | None = None, local_latents: int = 0, local_block: int = 8) -> dict:
    """The student of a released teacher: the same network plus the lambda input (`lam_style`, default the
    reference's for that architecture; `lam_blocks`: a DiT's last blocks that see it, None all; `local_latents`:
    a DiT's local latents per `local_block` positions, 0 none)."""
    kind = teacher_cfg.get("kind")
    style = lam_style or REFERENCE_LAM_STYLE.get(kind)
    if style is None:
        raise ValueError(f"no default lambda style for a released {kind!r} teacher; set config.model.lam_style")
    check_local_latents(kind, local_latents)
    extra = {} if lam_blocks is None else {"lam_blocks": lam_blocks}
    if local_latents:
        extra.update(local_latents=local_latents, local_block=local_block)
    return dict(teacher_cfg, lam_style=style, lam_zero_init=lam_zero_init, **extra)


def check_fits(cfg: dict, *, num_states: int, num_dims: int, where: Path) -> None:
    """The data fits the released network: K states and D positions (where the network fixes D)."""
    if cfg.get("num_states") != num_states:
        raise ValueError(f"{where}: the released teacher has num_states={cfg.get('num_states')}, this experiment's "
                         f"process has K={num_states} states (data vocabulary + mask); use the tokenizer and "
                         f"process the teacher was trained with")
    positions = cfg.get("num_positions")
    if positions is not None and positions != num_dims:
        raise ValueError(f"{where}: the released teacher takes num_positions={positions}, this experiment's data has "
                         f"D={num_dims} positions per example")
