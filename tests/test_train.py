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
from dlm.data.packing import pack


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
    ckpt = torch.load(tmp_path / "final.ckpt", weights_only=True)
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
        if found and torch.load(found[0], weights_only=True)["global_step"] >= 10:
            last = found[0]
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last is not None, "no last.ckpt was written before the deadline"
    assert not out.exists()  # a killed job leaves no final checkpoint behind
    step_at_kill = torch.load(last, weights_only=True)["global_step"]
    assert 0 < step_at_kill < 400

    cmd[4] = str(tmp_path / "log2.txt")
    subprocess.run(cmd, check=True)
    assert "resuming from" in (tmp_path / "log2.txt").read_text()
    assert torch.load(out, weights_only=True)["global_step"] == 400

    # changed settings must not resume the stale run
    cfg.write_text(yaml.safe_dump(run_cfg("mdlm", 12)))
    cmd[4] = str(tmp_path / "log3.txt")
    subprocess.run(cmd, check=True)
    assert "resuming from" not in (tmp_path / "log3.txt").read_text()
    assert torch.load(out, weights_only=True)["global_step"] == 12


def _untrained_ckpt(packed, path, algo):
    import lightning as L

    from dlm.train import build_module

    module = build_module(str(packed), run_cfg(algo, 1))
    trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("algo", ["mdlm", "udlm"])
def test_val_ppl_repeats_exactly_and_reports_its_standard_error(packed, tmp_path, algo):
    from dlm.evaluation.val_ppl import evaluate_ppl

    ckpt = str(_untrained_ckpt(packed, tmp_path / "m.ckpt", algo))
    torch.manual_seed(123)  # the global RNG must not matter
    a = evaluate_ppl(ckpt, str(packed), "valid", 8, 1, str(tmp_path / "a.json"), passes=3)
    torch.manual_seed(456)
    torch.rand(100)
    b = evaluate_ppl(ckpt, str(packed), "valid", 8, 1, str(tmp_path / "b.json"), passes=3)
    assert a["val_nll"] == b["val_nll"] and a["pass_nll"] == b["pass_nll"]
    # the passes draw different t and noise, and the SE is their spread / sqrt(3)
    assert len(set(a["pass_nll"])) == 3
    import numpy as np

    assert a["val_nll_se"] == pytest.approx(np.std(a["pass_nll"], ddof=1) / np.sqrt(3))
    assert a["val_nll"] == pytest.approx(np.mean(a["pass_nll"]))
    c = evaluate_ppl(ckpt, str(packed), "valid", 8, 2, str(tmp_path / "c.json"))
    assert c["val_nll"] != a["pass_nll"][0]  # another seed, another draw
    assert c["val_nll_se"] > 0 and "delta method" in c["se_method"]


def test_delta_method_standard_error_matches_hand_computation():
    import numpy as np

    from dlm.evaluation.val_ppl import bound_standard_error

    s = np.array([[10.0, 12.0, 7.0, 11.0]])
    n = np.array([[4.0, 4.0, 2.0, 4.0]])
    r = s.sum() / n.sum()  # 40 / 14
    resid = s[0] - r * n[0]
    expected = np.sqrt((resid ** 2).sum() / (4 * 3)) / n.mean()
    se, how = bound_standard_error(s.sum(1) / n.sum(1), s, n)
    assert se == pytest.approx(expected) and "delta" in how
    se2, how2 = bound_standard_error(np.array([2.0, 2.2, 1.9]), np.zeros((3, 2)), np.ones((3, 2)))
    assert se2 == pytest.approx(np.std([2.0, 2.2, 1.9], ddof=1) / np.sqrt(3)) and "passes" in how2


def test_ema_updates_once_per_optimizer_step_under_accumulation(packed, tmp_path):
    from dlm.train import train

    hp = run_cfg("mdlm", 6, accumulate=3)
    train(str(packed), str(tmp_path / "final.ckpt"), str(tmp_path), hp, threads=2)
    ckpt = torch.load(tmp_path / "final.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6
    assert ckpt["ema"]["num_updates"] == 6  # not 18 micro-batches


def test_non_finite_loss_stops_training_naming_run_step_and_checkpoint(packed, tmp_path, monkeypatch):
    """A NaN loss at step 7 stops the job before the backward pass: the error names the run, the step and the
    last good checkpoint (written at step 5, finite weights), and no final checkpoint appears."""
    from dlm.algos.mdlm import MDLM
    from dlm.train import train

    orig = MDLM.loss

    def loss(self, batch, step=0, generator=None):
        s, n = orig(self, batch, step, generator)
        return (s * float("nan"), n) if step >= 7 else (s, n)

    monkeypatch.setattr(MDLM, "loss", loss)
    run_dir = tmp_path / "mdlm_run"
    with pytest.raises(FloatingPointError, match=r"run 'mdlm_run': the training loss is nan at optimiser step 7") as e:
        train(str(packed), str(tmp_path / "final.ckpt"), str(run_dir), run_cfg("mdlm", 20), threads=2)
    last = next(run_dir.glob("checkpoints/*/last.ckpt"))
    assert str(last) in str(e.value)
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "final.ckpt").exists()


def test_global_batch_size_derives_accumulation():
    from dlm.train import resolve_trainer

    tr = resolve_trainer({"trainer": {"global_batch_size": 512, "batch_size": 16, "devices": 4, "num_nodes": 2}})
    assert tr["accumulate"] == 4
    assert resolve_trainer({"trainer": {"batch_size": 8, "accumulate": 3}})["accumulate"] == 3
    with pytest.raises(ValueError, match="global_batch_size=100"):
        resolve_trainer({"trainer": {"global_batch_size": 100, "batch_size": 16}})
