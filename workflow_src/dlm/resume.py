"""Exact resumption of training: RNG states in checkpoints, and a clean stop on the cluster's signal.

A job that Slurm preempts or that reaches its time limit gets a signal first (SIGUSR1 by `--signal`,
SIGTERM at preemption or `scancel`). `Preemption` turns either into: finish the optimiser step in flight,
write `last.ckpt`, exit with `PREEMPTED_EXIT` (non-zero, so Snakemake retries the job, which resumes).
Together with `dlm.data.dataset.TrainOrder` (the data order restarts at the exact batch) and the RNG
states saved here, a run interrupted any number of times ends with the weights of one that never was
(tests/test_resume.py).
"""

from __future__ import annotations

import logging
import random
import signal
from pathlib import Path

import lightning as L
import numpy as np
import torch

log = logging.getLogger("dlm.train")

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again later"
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of the DDP process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def rng_state() -> dict:
    """This process's random state: torch (CPU and every CUDA device), numpy and Python, as tensors and
    plain values only (checkpoints stay loadable with `torch.load(weights_only=True)`)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states() -> list[dict]:
    """Every rank's `rng_state()`, in rank order (a one-element list without DDP). Called on all ranks
    (Lightning builds the checkpoint dict on each rank; rank 0 writes it)."""
    rank, world = dist_rank_world()
    if world == 1:
        return [rng_state()]
    states: list = [None] * world
    torch.distributed.all_gather_object(states, rng_state())
    return states


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint; the job should be retried."""


class Preemption(L.Callback):
    """On SIGUSR1 or SIGTERM: at the end of the optimiser step in flight, save `ckpt_path` and stop with
    `Preempted`. The handler only records the signal; all work happens at a step boundary, where the
    checkpoint is consistent (global_step x accumulate batches consumed). Under DDP the ranks agree
    (all-reduce) before any of them stops, so they stop at the same step."""

    def __init__(self, ckpt_path: str | Path, accumulate: int):
        self.ckpt_path, self.accumulate = Path(ckpt_path), int(accumulate)
        self.received: int | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        self.received = signum

    def on_train_start(self, trainer, pl_module) -> None:
        # installed after Lightning's own SIGTERM handler (registered when fit starts), so this one wins
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handler)

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % self.accumulate:  # mid-accumulation: the step is not finished
            return
        flag = torch.tensor(0 if self.received is None else int(self.received), device=pl_module.device)
        if trainer.world_size > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if int(flag) == 0 or trainer.global_step >= trainer.max_steps:
            return
        trainer.save_checkpoint(self.ckpt_path)
        name = signal.Signals(int(flag)).name
        log.warning("received %s: saved %s at optimiser step %d; exiting with code %d so that the job is retried "
                    "and resumes from it", name, self.ckpt_path, trainer.global_step, PREEMPTED_EXIT)
        raise Preempted(f"{name} at optimiser step {trainer.global_step}; resume from {self.ckpt_path}")
