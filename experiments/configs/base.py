"""The settings every experiment config shares; each config starts from `base_config(name)`."""
import ml_collections


SIZES = ("default", "cpu")  # "cpu": the size that fits 2 CPU cores (each config says what it shrinks)


def base_config(name: str, size: str = "default") -> ml_collections.ConfigDict:
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {SIZES}")
    c = ml_collections.ConfigDict()
    c.name = name + (" (cpu size)" if size == "cpu" else "")
    c.seed = 0
    c.teacher_workdir = ""  # set to another run's workdir to reuse its trained teacher
    c.progress = True
    c.mesh = dict(fsdp=1)  # ('data', 'fsdp') mesh: data takes the devices fsdp leaves
    return c
