"""Exact resumption of training: RNG states in checkpoints, a clean stop on the cluster's signal, and a
chain of Slurm jobs for a run longer than the partition's time limit.

A job that Slurm preempts or cancels gets a signal first (SIGTERM; SIGUSR1 where a site's `--signal` asks
for it). `Preemption` turns either into: finish the optimiser step in flight, write `last.ckpt`, exit with
`PREEMPTED_EXIT` (non-zero, so Snakemake retries the job, which resumes).

Inside a Slurm batch job with a time limit, `job_time_limit` reads the time left from Slurm when training
starts, and `Preemption` stops by itself `stop_lead(limit)` before the limit: it saves `last.ckpt` and
requeues the job (`scontrol requeue`: the same job id goes back to the queue and, when it starts again,
its rerun resumes from `last.ckpt`). Snakemake's Slurm executor sees that job as pending, then running,
until the run is done, so a run takes as many jobs as it needs and no Snakemake retry is spent on it
(docs/slurm.md). A crash or a non-finite loss is not requeued: the job fails as any other.

Together with `dlm.data.dataset.TrainOrder` (the data order restarts at the exact batch) and the RNG
states saved here, a run interrupted any number of times ends with the weights of one that never was
(tests/test_resume.py, tests/test_slurm.py).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch

log = logging.getLogger("dlm.train")

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again later"
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
# a job stops this share of its time limit before the end, at least LEAD_MIN_S and at most LEAD_CAP_S before it:
# room to finish the optimiser step in flight, write last.ckpt and requeue, or at the end of a run to validate,
# write the final checkpoint and let Snakemake finish the job (20 s of a 1-minute limit, 6 min of 1 h, 10 min of 24 h)
LEAD_FRACTION = 0.1
LEAD_MIN_S = 20.0
LEAD_CAP_S = 600.0


def slurm_duration(text: str) -> float | None:
    """Seconds in a duration as squeue prints it (`%L`, `%l`: [days-][hours:]minutes:seconds, e.g. 1-02:03:04,
    2:03:04, 3:04); None for UNLIMITED, NOT_SET, INVALID or anything else that is not a duration."""
    text = text.strip()
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts) or (days and not days.isdigit()):
        return None
    seconds = 0
    for p in parts:
        seconds = 60 * seconds + int(p)
    return float(seconds + 86400 * int(days or 0))


def stop_lead(limit_s: float) -> float:
    """How long before its time limit a job stops: LEAD_FRACTION of the limit, within [LEAD_MIN_S, LEAD_CAP_S]
    (Slurm's shortest limit is a minute, so the lead always leaves at least 40 s to train)."""
    return min(max(LEAD_FRACTION * limit_s, LEAD_MIN_S), LEAD_CAP_S)


@dataclass(frozen=True)
class TimeLimit:
    """The time budget of the Slurm job this process runs in: training stops at `deadline` (time.monotonic)."""

    job_id: str
    deadline: float


def job_time_limit() -> TimeLimit | None:
    """The Slurm job's time budget, read from squeue (`%L` time left, `%l` limit) when training starts; None
    outside a Slurm job, for a job without a time limit or one that is not running (a stale SLURM_JOB_ID), or
    where squeue does not answer (then the run trains until it is done or signalled)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        res = subprocess.run(["squeue", "--noheader", "--jobs", job, "--format", "%T|%L|%l"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("Slurm job %s: could not read its time limit (%s); training runs until done or signalled", job, e)
        return None
    fields = res.stdout.strip().split("|")
    if res.returncode != 0 or len(fields) != 3 or fields[0] != "RUNNING":
        log.warning("Slurm job %s: could not read the time limit of a running job (squeue: %s); training runs "
                    "until done or signalled", job, (res.stderr or res.stdout).strip()[:200])
        return None
    left, limit = slurm_duration(fields[1]), slurm_duration(fields[2])
    if left is None or limit is None:
        log.info("Slurm job %s has no time limit (%s): training runs until done", job, res.stdout.strip())
        return None
    budget = TimeLimit(job, time.monotonic() + left - stop_lead(limit))
    log.info("Slurm job %s: time limit %.0f s, %.0f s left; training stops, saves and requeues the job %.0f s "
             "before the limit", job, limit, left, stop_lead(limit))
    return budget


def requeue(job_id: str) -> bool:
    """Put Slurm batch job `job_id` back in the queue (`scontrol requeue`): Slurm stops this run of it and
    starts the job again, under the same id, once it is eligible. False (logged) where Slurm refuses, e.g.
    for an interactive job or one submitted with --no-requeue."""
    try:
        res = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.error("could not requeue Slurm job %s: %s", job_id, e)
        return False
    if res.returncode != 0:
        log.error("could not requeue Slurm job %s: %s", job_id, (res.stderr or res.stdout).strip()[:300])
        return False
    return True


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
    """On SIGUSR1 or SIGTERM, or once `time_limit.deadline` has passed: at the end of the optimiser step in
    flight, save `ckpt_path` and stop with `Preempted`; when the deadline stopped it (and no signal came),
    rank 0 first requeues the Slurm job. The handler only records the signal; all work happens at a step
    boundary, where the checkpoint is consistent (global_step x accumulate batches consumed). Under DDP the
    ranks agree (all-reduce) before any of them stops, so they stop at the same step."""

    def __init__(self, ckpt_path: str | Path, accumulate: int, time_limit: TimeLimit | None = None):
        self.ckpt_path, self.accumulate = Path(ckpt_path), int(accumulate)
        self.time_limit = time_limit
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
        out_of_time = self.time_limit is not None and time.monotonic() >= self.time_limit.deadline
        # (signal number or 0, deadline passed): the largest over the ranks
        flag = torch.tensor([0 if self.received is None else int(self.received), int(out_of_time)],
                            device=pl_module.device)
        if trainer.world_size > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        signum, out_of_time = int(flag[0]), bool(flag[1])
        # a signal at the last step: the run ends now anyway. Out of time at the last step: the final validation
        # and checkpoint might not fit before the limit, so the next job writes them
        if not out_of_time and (not signum or trainer.global_step >= trainer.max_steps):
            return
        trainer.save_checkpoint(self.ckpt_path)
        step = trainer.global_step
        if signum:  # a signal wins over the deadline: a cancelled or preempted job is not requeued by us
            name = signal.Signals(signum).name
            log.warning("received %s: saved %s at optimiser step %d; exiting with code %d so that the job is retried "
                        "and resumes from it", name, self.ckpt_path, step, PREEMPTED_EXIT)
            raise Preempted(f"{name} at optimiser step {step}; resume from {self.ckpt_path}")
        job = self.time_limit.job_id
        log.warning("time limit of Slurm job %s ahead: saved %s at optimiser step %d; requeueing the job, whose next "
                    "run resumes from there", job, self.ckpt_path, step)
        requeued = torch.tensor(int(trainer.is_global_zero and requeue(job)), device=pl_module.device)
        if trainer.world_size > 1:  # the others wait for rank 0's requeue before they exit
            torch.distributed.all_reduce(requeued, op=torch.distributed.ReduceOp.MAX)
        if not int(requeued):
            log.warning("Slurm job %s was not requeued: exiting with code %d so that it is retried", job,
                        PREEMPTED_EXIT)
        raise Preempted(f"time limit of Slurm job {job} at optimiser step {step}; resume from {self.ckpt_path}")
