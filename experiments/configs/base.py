"""The settings every experiment config shares; each config starts from `base_config(name)`."""
import ml_collections


def base_config(name: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = name
    c.seed = 0
    c.teacher_workdir = ""  # set to another run's workdir to reuse its trained teacher
    c.progress = True
    c.mesh = dict(fsdp=1)  # ('data', 'fsdp') mesh: data takes the devices fsdp leaves
    return c
