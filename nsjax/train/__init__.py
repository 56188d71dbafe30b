"""The training engine: one config (`TrainConfig`), one state (`TrainState`), pure steps jitted
once on a device mesh (data parallel or FSDP), the reference recipe (TF RMSProp, staircase
decay, EMA), orbax checkpoints with exact resume, teacher export, and the `fit` loop.

The loop, its input batches and the checkpoints (grain and orbax-checkpoint) load on first use,
so that the steps import where those two are absent (a bare accelerator image)."""

import importlib

from nsjax.train._config import TrainConfig
from nsjax.train._mesh import (
    Steps,
    batch_sharding,
    fsdp_spec,
    jit_steps,
    make_mesh,
    shard_batch,
    state_shardings,
)
from nsjax.train._recipe import (
    current_learning_rate,
    ema_decay,
    ema_update,
    learning_rate_schedule,
    make_optimizer,
    weight_decay_mask,
)
from nsjax.train._state import TrainState, ema_model, init_state, running_bn_state
from nsjax.train._step import check_batch, eval_step, normalize, predict_step, train_step
from nsjax.train._teacher import Teacher, export_teacher, load_teacher, teacher_metadata

__all__ = [
    "Checkpointer", "Inputs", "NonFiniteLossError", "Steps", "Teacher", "TrainConfig", "TrainState",
    "array_inputs",
    "batch_sharding", "check_batch", "current_learning_rate", "ema_decay", "ema_model",
    "ema_update", "eval_batches", "eval_step", "evaluate", "export_teacher", "fit", "fsdp_spec",
    "init_state", "jit_steps", "learning_rate_schedule", "load_teacher", "make_mesh",
    "make_optimizer", "normalize", "precise_bn", "predict_step", "running_bn_state", "shard_batch",
    "state_shardings", "teacher_metadata", "train_batches", "train_step", "weight_decay_mask",
]  # fmt: skip

_ON_FIRST_USE = {"Checkpointer": "_checkpoint", "Inputs": "_loop", "array_inputs": "_loop",
                 "NonFiniteLossError": "_loop", "evaluate": "_loop",
                 "fit": "_loop", "precise_bn": "_loop", "eval_batches": "_batches",
                 "train_batches": "_batches"}  # fmt: skip


def __getattr__(name: str):
    if name in _ON_FIRST_USE:
        return getattr(importlib.import_module(f"nsjax.train.{_ON_FIRST_USE[name]}"), name)
    raise AttributeError(f"module 'nsjax.train' has no attribute {name!r}")
