"""One of two localhost processes (2 CPU devices each) training the toy problem on a data=2 x fsdp=2 mesh.

usage: XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu \
       python _two_process_worker.py PROCESS_ID PORT WORKDIR NUM_STEPS
(the environment is the caller's business: the test imports `build` and `eval_loss` from this module.)
Prints one JSON line: {"process": i, "loss": eval loss after training, "param_sum": sum of all final params}.
"""
import json
import os
import sys

import jax

from _train_toy import data_iterator, init_params, loss_fn, make_data
from di4c_jax.parallel import batch_sharding, global_batch, make_mesh
from di4c_jax.train import (Checkpointer, MetricWriter, OptimConfig, create_train_state, host_value,
                            make_optimizer, make_train_step, train)

GLOBAL_BATCH = 16
EVAL_KEY = 123


def build(mesh, process_index, process_count):
    """State, step and data iterator; the same call in one process on 4 devices gives the reference run."""
    cfg = OptimConfig(learning_rate=3e-3, ema_decay=0.99)
    tx = make_optimizer(cfg)
    state, shardings = create_train_state(init_params, tx, jax.random.key(5), mesh)
    step = make_train_step(loss_fn, tx, ema_decay=cfg.ema_decay, mesh=mesh, state_shardings=shardings)
    x, y = make_data()
    it = data_iterator(x, y, GLOBAL_BATCH, seed=3, process_index=process_index, process_count=process_count)
    return state, step, it


def eval_loss(mesh, params, process_index, process_count):
    """Loss of `params` on the first global batch with a fixed key (all processes must call it)."""
    x, y = make_data()
    local = GLOBAL_BATCH // process_count
    rows = slice(process_index * local, (process_index + 1) * local)
    batch = global_batch({"x": x[:GLOBAL_BATCH][rows], "y": y[:GLOBAL_BATCH][rows]}, batch_sharding(mesh))
    loss, _ = jax.jit(loss_fn)(jax.random.key(EVAL_KEY), params, batch, None)
    return float(host_value(loss))


def main(process_id, port, workdir, num_steps):
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                               initialization_timeout=120)
    mesh = make_mesh(2, 2)
    state, step, it = build(mesh, jax.process_index(), jax.process_count())
    ckpt = Checkpointer(os.path.join(workdir, "ckpt"), max_to_keep=2, save_every=3)
    with MetricWriter(os.path.join(workdir, "logs")) as writer:
        state = train(state, step, it, num_steps, ckpt, writer, log_every=3, progress=False,
                      to_global=lambda b: global_batch(b, batch_sharding(mesh)))
    ckpt.close()
    param_sum = jax.jit(lambda p: sum(v.sum() for v in jax.tree.leaves(p)), out_shardings=None)(state["params"])
    print(json.dumps({"process": jax.process_index(), "steps": ckpt.all_steps(),
                      "loss": eval_loss(mesh, state["params"], jax.process_index(), jax.process_count()),
                      "param_sum": float(host_value(param_sum))}), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
