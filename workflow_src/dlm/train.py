"""Train one run (any method) with Lightning, resuming from `last.ckpt` when a previous job was killed.

    train(data_dir, out_ckpt, run_dir, hp)

`hp` is the run's resolved config entry (see config/schema.yaml, `runs.*`): algo, model, noise,
optim, time_conditioning and trainer settings. The final checkpoint (with EMA) is written atomically
to `out_ckpt`, its training curve (loss, validation NLL/PPL per step; dlm.train_log) to
`{stem}_metrics.csv` beside it; intermediate ones live in `run_dir/checkpoints/<settings hash>/` (last.ckpt every
`ckpt_every` steps), so that a rerun with changed settings does not resume a stale run.

Lightning owns the loop, checkpointing, precision and DDP; the objective itself is a plain
`dlm.algos.Method` held by `LitMethod`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from dlm.algos import get_method
from dlm.checkpoints.safe_load import load_checkpoint
from dlm.data.dataset import PackedDataset, TrainOrder, read_meta, verify_packed
from dlm.models.ema import EMA
from dlm.resume import (PREEMPTED_EXIT, Preempted, Preemption, dist_rank_world, gather_rng_states, job_time_limit,
                         set_rng_state)
from dlm.train_log import attempt_logger, metrics_path, write_metrics
from dlm.utils import config_hash, sha256_file

log = logging.getLogger("dlm.train")

TRAINER_DEFAULTS = dict(max_steps=1000, batch_size=32, accumulate=1, global_batch_size=None, val_every=500,
                        val_batches=16, ckpt_every=200, log_every=50, ema=0.9999, seed=1, precision="auto",
                        grad_clip=1.0, devices=1, num_nodes=1, strategy="auto", launch="auto")
OPTIM_DEFAULTS = dict(lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=2500,
                      lr_schedule="constant", min_lr_ratio=0.1)


class LitMethod(L.LightningModule):
    """Lightning wrapper: optimiser and LR schedule, EMA of the backbone, train/val loops."""

    def __init__(self, method: dict, optim: dict | None = None, ema: float = 0.9999, max_steps: int | None = None,
                 seed: int = 1):
        super().__init__()
        self.save_hyperparameters()
        hp = dict(method)
        self.method = get_method(hp.pop("algo"))(**hp)
        self.optim_cfg = {**OPTIM_DEFAULTS, **(optim or {})}
        self.ema = EMA(self.method.backbone, ema) if ema and ema > 0 else None
        self._val_nll, self._val_tokens = 0.0, 0
        self.run_label = "training run"  # set by `train`: named in errors
        self.ckpt_dir: Path | None = None

    def on_fit_start(self):
        # DDP: every rank starts from the same seed (identical initial weights); a fresh run then gives each
        # rank its own stream, so the ranks' forward-process draws differ (a resumed run restores them instead)
        if self.trainer.world_size > 1 and self.trainer.ckpt_path is None:
            L.seed_everything(self.hparams.seed + 1_000_003 * self.trainer.global_rank, verbose=False)

    def training_step(self, batch, batch_idx):
        nll_sum, n = self.method.loss(batch, step=self.global_step)
        loss = nll_sum / n
        if not bool(torch.isfinite(loss)):  # stop before the backward pass spreads it into the weights
            last = self.ckpt_dir / "last.ckpt" if self.ckpt_dir is not None else None
            good = (f"the last good checkpoint is {last}" if last is not None and last.exists()
                    else "no checkpoint was written before it")
            raise FloatingPointError(f"{self.run_label}: the training loss is {float(loss)} at optimiser step "
                                     f"{self.global_step} (batch {batch_idx}); stopped without updating the "
                                     f"weights, {good}. Lower optim.lr or check the data.")
        self.log("train/loss", loss, prog_bar=True, on_step=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # once per optimiser step (global_step advances only when the accumulated gradient is applied),
        # not per micro-batch: under accumulation a per-micro-batch update would decay the EMA too fast
        self._update_ema()

    def _update_ema(self) -> None:
        """Bring the EMA up to the optimiser step done (one update per step; a no-op when it is)."""
        if self.ema is not None and self.global_step > self.ema.num_updates:
            self.ema.update(self.method.backbone)

    def on_validation_epoch_start(self):
        self._val_nll, self._val_tokens = 0.0, 0
        if self.ema is not None:  # validate with the EMA weights (papers' convention)
            self._ema_ctx = self.ema.swapped_in(self.method.backbone)
            self._ema_ctx.__enter__()

    def validation_step(self, batch, batch_idx):
        # a fixed generator per batch: the validation bound is reproducible run to run
        g = torch.Generator(device=batch["input_ids"].device).manual_seed(self.hparams.seed * 100_003 + batch_idx)
        nll_sum, n = self.method.nelbo(batch, g)
        self._val_nll += float(nll_sum.double())
        self._val_tokens += int(n)

    def on_validation_epoch_end(self):
        if self.ema is not None:
            self._ema_ctx.__exit__(None, None, None)
        if self._val_tokens:
            nll = self._val_nll / self._val_tokens
            self.log("val/nll", nll, sync_dist=True)
            self.log("val/ppl", math.exp(min(nll, 50.0)), sync_dist=True)

    def configure_optimizers(self):
        o = self.optim_cfg
        opt = torch.optim.AdamW(self.method.parameters(), lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                                weight_decay=o["weight_decay"])
        warmup, total = int(o["warmup_steps"]), self.hparams.max_steps
        kind, floor = o["lr_schedule"], o["min_lr_ratio"]
        if kind not in ("constant", "cosine"):
            raise ValueError(f"optim.lr_schedule must be 'constant' or 'cosine', got {kind!r}")

        def factor(step: int) -> float:
            # 1) linear warm-up from 0 (MDLM/DUO `constant_warmup`), 2) constant or cosine decay to floor
            if step < warmup:
                return (step + 1) / warmup
            if kind == "constant" or not total:
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint):
        # callbacks save at a step's on_train_batch_end (Preemption, ModelCheckpoint's last.ckpt) before this
        # module's hook has applied that step's EMA update: apply it now (the backbone holds the step's weights),
        # or the resumed run's EMA stays one update behind (its validation and, without accumulation, its EMA)
        self._update_ema()
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()
        # every rank's RNG state (dropout and the forward-process draws use the global RNGs), so that a
        # resumed run draws exactly what an uninterrupted one would have drawn after this step
        checkpoint["rng_states"] = gather_rng_states()

    def on_load_checkpoint(self, checkpoint):
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
        states = checkpoint.get("rng_states")
        rank, world = dist_rank_world()
        if states is not None and len(states) == world:
            set_rng_state(states[rank])
        elif states is not None:
            log.warning("checkpoint holds RNG states of %d ranks, this run has %d: the random draws after the "
                        "resume differ from an uninterrupted run", len(states), world)


class StepLogger(L.Callback):
    """One readable line per `every` optimiser steps: loss, lr, tokens/s (for log files, not a tty)."""

    def __init__(self, every: int, tokens_per_step: int):
        self.every, self.tokens_per_step = every, tokens_per_step
        self.t0 = None

    def on_train_start(self, trainer, pl_module):
        self.t0, self.step0 = time.perf_counter(), trainer.global_step
        log.info("training %s: %d parameters, from step %d to %d", pl_module.method.algo, pl_module.method.num_params(),
                 trainer.global_step, trainer.max_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:
            dt = time.perf_counter() - self.t0
            tps = (step - self.step0) * self.tokens_per_step / max(dt, 1e-9)
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            log.info("step %6d/%d  loss %.4f  lr %.2e  %.0f tok/s  %.0fs", step, trainer.max_steps, loss, lr, tps, dt)

    def on_validation_end(self, trainer, pl_module):
        m = trainer.callback_metrics
        if "val/nll" in m:
            log.info("validation at step %d: nll %.4f  ppl %.2f", trainer.global_step, float(m["val/nll"]),
                     float(m["val/ppl"]))


def loaders(data_dir: str, batch_size: int, seed: int, start_batch: int = 0) -> tuple[DataLoader, DataLoader]:
    """Train loader: the endless, resumable `TrainOrder` (from batch `start_batch` of this rank); valid: in order.
    Image data (`dlm.data.images`): images with their labels, randomly mirrored (`FlipOrder`) when meta says hflip."""
    verify_packed(data_dir, ("train", "valid"))
    image = read_meta(data_dir).get("modality") == "image"
    if image:
        from dlm.data.images import FlipOrder, ImageDataset

        train_ds, valid_ds = ImageDataset(data_dir, "train"), ImageDataset(data_dir, "valid")
    else:
        train_ds, valid_ds = PackedDataset(data_dir, "train"), PackedDataset(data_dir, "valid")
    try:  # TrainOrder checks that the split fills a batch
        order = TrainOrder(len(train_ds), batch_size, seed, start_batch)
    except ValueError as e:
        raise ValueError(f"{data_dir}: train split: {e}") from None
    if image and train_ds.meta.get("hflip"):
        order = FlipOrder(order, seed)
    # the loader's own base-seed draw comes from a private generator, never from the global RNG
    train = DataLoader(train_ds, batch_size=batch_size, sampler=order, drop_last=True, generator=torch.Generator())
    valid = DataLoader(valid_ds, batch_size=batch_size, shuffle=False)
    return train, valid


def resolve_trainer(hp: dict) -> dict:
    """The run's trainer settings with defaults, and gradient accumulation derived from a global batch
    (as in the papers' configs: accumulate = global / (batch_size * devices * nodes))."""
    tr = {**TRAINER_DEFAULTS, **hp.get("trainer", {})}
    if tr["global_batch_size"]:
        per_step = tr["batch_size"] * int(tr["devices"]) * int(tr["num_nodes"])
        if tr["global_batch_size"] % per_step:
            raise ValueError(f"trainer.global_batch_size={tr['global_batch_size']} is not a multiple of batch_size x "
                             f"devices x num_nodes = {tr['batch_size']} x {tr['devices']} x {tr['num_nodes']}")
        tr["accumulate"] = tr["global_batch_size"] // per_step
    return tr


def build_module(data_dir: str, hp: dict) -> LitMethod:
    """The Lightning module of a run: the method's constructor arguments come from the data's meta.json
    (vocabulary, block length, special ids, tokenizer) and the run's settings."""
    meta = read_meta(data_dir)
    tr = resolve_trainer(hp)
    cls = get_method(hp["algo"])
    if meta.get("modality") == "image":  # K, L and the image geometry (the UNet's) from the image data
        from dlm.data.images import method_data_args

        data_args = method_data_args(meta, hp["algo"])
    else:
        data_args = dict(vocab_size=meta["vocab_size"], block_length=meta["block_length"],
                         special_ids=meta["special_ids"], tokenizer_dir=meta["tokenizer_dir"])
    method = dict(algo=hp["algo"], **data_args, model=hp.get("model", {}),
                  noise=hp.get("noise", {}), time_conditioning=hp.get("time_conditioning", cls.default_time_conditioning),
                  antithetic=hp.get("antithetic", True), data_dir=str(data_dir), **hp.get("algo_args", {}))
    return LitMethod(method, optim=hp.get("optim"), ema=tr["ema"], max_steps=tr["max_steps"], seed=tr["seed"])


def load_init_weights(module: LitMethod, path: str, weights: str = "raw", teacher: str | None = None) -> None:
    """Start a run from another run's checkpoint (distillation, `dlm.distill`): the backbone gets its raw
    weights (`weights="raw"`, the original DUO / SDTT code, which keeps training the same student) or its EMA
    weights (`"ema"`; the raw ones if it has no EMA, e.g. an imported checkpoint); the run's EMA restarts from
    them. A method with a teacher (dcd, sdtt) gets a frozen copy of the checkpoint's `teacher` weights ("raw":
    the original's teacher := student, DUO Alg. 1; "ema": DUO Alg. 2's EMA teacher; None: as `weights`)."""
    teacher = weights if teacher is None else teacher
    for what, value in (("init weights", weights), ("teacher weights", teacher)):
        if value not in ("ema", "raw"):
            raise ValueError(f"{what} must be 'ema' or 'raw', got {value!r}")
    ckpt = load_checkpoint(path)
    prefix = "method.backbone."
    raw = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}

    def state(kind: str) -> dict:
        return {**raw, **ckpt["ema"]["shadow"]} if kind == "ema" and "ema" in ckpt else raw

    if hasattr(module.method, "reset_teacher"):
        module.method.backbone.load_state_dict(state(teacher))
        module.method.reset_teacher()
    module.method.backbone.load_state_dict(state(weights))
    if module.ema is not None:
        module.ema = EMA(module.method.backbone, module.ema.decay)
    have = "ema" in ckpt
    log.info("initialised from %s (student: %s weights, teacher: %s weights)", path, weights if have else "raw",
             teacher if have else "raw")


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reading (the resume from last.ckpt in `Trainer.fit(ckpt_path=...)`) through
    `load_checkpoint`, the one loader of our checkpoints: weights only, a file that could run code is refused.
    (Lightning 2.6 itself calls torch.load with weights_only=None, which an environment variable,
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, turns into a full unpickle.) Writing is Lightning's own."""

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        # Lightning's default: each storage stays on the device it was saved from
        return load_checkpoint(path, map_location=map_location or (lambda storage, loc: storage))


def trainer_plugins(tr: dict) -> list:
    """The Trainer's plugins: the cluster environment (`cluster_plugins`) and the safe checkpoint reader."""
    return [*cluster_plugins(tr), SafeCheckpointIO()]


def cluster_plugins(tr: dict) -> list:
    """Lightning's cluster environment. Under Slurm with one task per rank (srun, ntasks = devices x nodes):
    Slurm's, without Lightning's auto-requeue (dlm.resume requeues the job itself before its time limit; on a
    signal the job exits 75 and Snakemake retries it, which resumes); a single Slurm task that is to drive
    several devices (Snakemake's Slurm executor starts one): Lightning's own launcher, which starts the other
    ranks itself. Outside Slurm: Lightning's default."""
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    if not SLURMEnvironment.detect():
        return []
    world = int(tr["devices"]) * int(tr["num_nodes"])
    ntasks = int(os.environ.get("SLURM_NTASKS", "1"))
    if ntasks == world:
        log.info("ranks are Slurm tasks: task %s of %d", os.environ.get("SLURM_PROCID", "?"), ntasks)
        return [SLURMEnvironment(auto_requeue=False)]
    log.info("one Slurm task for %d ranks: Lightning starts the other ranks", world)
    return [LightningEnvironment()]


def with_integral(hp: dict, integral_path: str | os.PathLike | None) -> dict:
    """The run's settings with the integral cache (the `integral` rule's .npz, read by DUO's curriculum and DCD
    with transform `cache`) as algo_args.integral_path; `hp` itself when there is none."""
    if integral_path is None:
        return hp
    # a plain str (not Snakemake's path type): checkpoints hold plain data only (dlm.checkpoints.safe_load)
    return {**hp, "algo_args": {**(hp.get("algo_args") or {}), "integral_path": str(os.fspath(integral_path))}}


def checkpoint_dir(run_dir: str | os.PathLike, hp: dict, data_dir: str, init_ckpt: str | None = None,
                   init_weights: str = "raw", teacher_weights: str | None = None) -> Path:
    """Where a run keeps last.ckpt: run_dir/checkpoints/<hash of its settings, data and starting checkpoint>, so
    that only a run with the same settings and data resumes (a changed config starts afresh)."""
    key = {"hp": hp, "data": read_meta(data_dir)}
    if init_ckpt is not None:  # a different starting checkpoint is a different run
        key["init"] = [sha256_file(init_ckpt), init_weights] + ([teacher_weights] if teacher_weights else [])
    return Path(run_dir) / "checkpoints" / config_hash(key)


def train(data_dir: str, out_ckpt: str, run_dir: str, hp: dict, threads: int | None = None,
          init_ckpt: str | None = None, init_weights: str = "raw", teacher_weights: str | None = None,
          callbacks: list | None = None) -> None:
    """Train (or resume) one run and write `out_ckpt`. On SIGUSR1/SIGTERM it saves `last.ckpt` at the end of
    the optimiser step in flight and exits with `PREEMPTED_EXIT` (dlm.resume); rerunning resumes exactly.
    In a Slurm job with a time limit it stops by itself shortly before the limit, saves and requeues the job
    (dlm.resume.job_time_limit): a run longer than the limit trains in a chain of jobs.
    `callbacks`: extra Lightning callbacks (notebooks, tests)."""
    tr = resolve_trainer(hp)
    if threads:
        torch.set_num_threads(threads)
    L.seed_everything(tr["seed"], workers=True)
    module = build_module(data_dir, hp)
    if init_ckpt is not None:
        load_init_weights(module, init_ckpt, init_weights, teacher_weights)
    gpu = torch.cuda.is_available()
    precision = tr["precision"] if tr["precision"] != "auto" else ("bf16-mixed" if gpu else "32-true")
    ckpt_dir = checkpoint_dir(run_dir, hp, data_dir, init_ckpt, init_weights, teacher_weights)
    last = ckpt_dir / "last.ckpt"
    done_steps = int(load_checkpoint(last)["global_step"]) if last.exists() else 0
    # checkpoints are written at optimiser-step boundaries: each rank has consumed global_step x accumulate batches
    train_dl, valid_dl = loaders(data_dir, tr["batch_size"], tr["seed"], start_batch=done_steps * tr["accumulate"])
    module.run_label, module.ckpt_dir = f"run {Path(run_dir).name!r}", ckpt_dir
    checkpointing = L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0,
                                                        every_n_train_steps=tr["ckpt_every"])
    tokens_per_step = (tr["batch_size"] * tr["accumulate"] * module.method.hparams.block_length * int(tr["devices"])
                       * int(tr["num_nodes"]))
    trainer = L.Trainer(
        max_steps=tr["max_steps"], accelerator="auto", devices=tr["devices"], num_nodes=tr["num_nodes"],
        strategy=tr["strategy"], plugins=trainer_plugins(tr),
        precision=precision, gradient_clip_val=tr["grad_clip"], accumulate_grad_batches=tr["accumulate"],
        # Lightning counts training batches here: val_every optimiser steps = val_every x accumulate batches
        val_check_interval=min(tr["val_every"], tr["max_steps"]) * tr["accumulate"], check_val_every_n_epoch=None,
        limit_val_batches=tr["val_batches"], num_sanity_val_steps=0, default_root_dir=run_dir,
        # training curves (dlm.train_log): one CSV per attempt beside last.ckpt, merged at the end
        logger=attempt_logger(ckpt_dir, done_steps), log_every_n_steps=tr["log_every"],
        callbacks=[checkpointing, StepLogger(tr["log_every"], tokens_per_step),
                   Preemption(last, tr["accumulate"], job_time_limit()), *(callbacks or [])],
        enable_progress_bar=sys.stderr.isatty(), enable_model_summary=False, use_distributed_sampler=False,
    )
    if last.exists():
        log.info("resuming from %s (optimiser step %d, mid-epoch with the same data order)", last, done_steps)
    try:
        trainer.fit(module, train_dl, valid_dl, ckpt_path=str(last) if last.exists() else None)
    except Preempted as e:
        log.warning("%s: preempted (%s)", module.run_label, e)
        raise SystemExit(PREEMPTED_EXIT) from None
    # every rank takes part in building the checkpoint (RNG states are gathered); rank 0 writes it, then
    # renames it into place, so the final checkpoint never exists half-written
    partial = Path(out_ckpt).with_name(f".{Path(out_ckpt).name}.partial")
    trainer.save_checkpoint(partial)
    if trainer.is_global_zero:
        write_metrics(ckpt_dir / "csv", metrics_path(out_ckpt))
        os.replace(partial, out_ckpt)
        log.info("wrote %s and %s", out_ckpt, metrics_path(out_ckpt))
