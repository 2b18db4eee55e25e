"""Training engine: state, optimiser, jitted sharded step, Orbax checkpoints, metrics, loop."""
from di4c_jax.train.checkpoint import Checkpointer
from di4c_jax.train.loop import abstract_state_of, host_value, train
from di4c_jax.train.metrics import MetricWriter
from di4c_jax.train.preemption import Preempted, sigterm_guard
from di4c_jax.train.state import (
    OptimConfig,
    create_train_state,
    ema_decay_at,
    ema_update,
    init_train_state,
    key_data,
    lr_schedule,
    make_optimizer,
)
from di4c_jax.train.rounds import Round, distill_rounds
from di4c_jax.train.step import distillation_loss_fn, make_train_step, teacher_loss_fn, with_label_dropout

__all__ = [
    "Checkpointer", "MetricWriter", "Preempted", "Round", "distill_rounds", "OptimConfig", "abstract_state_of", "create_train_state",
    "distillation_loss_fn", "ema_decay_at", "ema_update", "host_value", "init_train_state", "key_data",
    "lr_schedule", "make_optimizer", "make_train_step", "sigterm_guard", "teacher_loss_fn", "train", "with_label_dropout",
]
