"""Training script for the kill -9 / resume test: the toy problem on a data=4 x fsdp=2 mesh of 8 CPU devices.

usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
       python _train_worker.py WORKDIR NUM_STEPS SAVE_EVERY OUT_NPZ [SLEEP_PER_STEP]
($TRAIN_MESH = 'DATAxFSDP' picks another mesh, e.g. 2x2 on 4 devices; default 4x2.)
Prints 'start <step>' (the checkpoint it resumes from, 0 if none) and writes all final state leaves to OUT_NPZ.
"""
import os
import sys
import time

import jax
import numpy as np

from _train_toy import data_iterator, init_params, loss_fn, make_data
from di4c_jax.parallel import make_mesh
from di4c_jax.train import (Checkpointer, MetricWriter, OptimConfig, create_train_state, lr_schedule,
                            make_optimizer, make_train_step, train)


def main(workdir, num_steps, save_every, out, sleep=0.0):
    cfg = OptimConfig(learning_rate=3e-3, warmup_steps=3, ema_decay=0.99)
    tx = make_optimizer(cfg)
    data, fsdp = (int(n) for n in os.environ.get("TRAIN_MESH", "4x2").split("x"))
    mesh = make_mesh(data, fsdp)
    state, shardings = create_train_state(init_params, tx, jax.random.key(42), mesh)
    step = make_train_step(loss_fn, tx, ema_decay=cfg.ema_decay, lr_schedule=lr_schedule(cfg), mesh=mesh,
                           state_shardings=shardings)

    def slow_step(state, batch, frozen):
        time.sleep(sleep)
        return step(state, batch, frozen)

    x, y = make_data()
    it = data_iterator(x, y, batch_size=16, seed=7)
    ckpt = Checkpointer(os.path.join(workdir, "ckpt"), max_to_keep=2, save_every=save_every)
    print("start", max(ckpt.all_steps(), default=0), flush=True)
    with MetricWriter(os.path.join(workdir, "logs")) as writer:
        state = train(state, slow_step, it, num_steps, ckpt, writer, log_every=2, progress=False)
    ckpt.close()
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    np.savez(out, **{jax.tree_util.keystr(path): np.asarray(v) for path, v in leaves})


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5]) if len(sys.argv) > 5 else 0.0)
