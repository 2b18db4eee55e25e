"""One of two localhost processes training the toy problem slowly (for the test that kills the other one).

usage: XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu \\
       python _stall_worker.py PROCESS_ID PORT HEARTBEAT_S
Prints 'training' once the processes have joined, then trains 10000 slow steps.
"""
import sys
import time

import jax

from _two_process_worker import build
from di4c_jax.parallel import batch_sharding, global_batch, initialize_distributed, make_mesh
from di4c_jax.train import train


def main(process_id, port, heartbeat):
    initialize_distributed(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                           timeout_s=120, heartbeat_timeout_s=heartbeat)
    mesh = make_mesh(2, 2)
    state, step, it = build(mesh, jax.process_index(), jax.process_count())

    def slow_step(*args):
        time.sleep(0.2)
        return step(*args)

    print("training", flush=True)
    train(state, slow_step, it, 10_000, None, None, log_every=5, progress=False,
          to_global=lambda b: global_batch(b, batch_sharding(mesh)))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
