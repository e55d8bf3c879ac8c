"""Training curves: the CSVLogger rows of a run, merged over resumed attempts (dlm.train_log)."""

import signal

import pandas as pd
import pytest
import torch
from test_resume import SignalAt, tiny  # noqa: F401  (the resume tests' packed corpus fixture and signal callback)

from dlm.resume import PREEMPTED_EXIT
from dlm.train_log import merge_metrics, metrics_path


HP = {"algo": "mdlm", "model": {"size": "nano", "dropout": 0.1},
      "optim": {"lr": 3e-3, "warmup_steps": 3, "lr_schedule": "cosine"},
      "trainer": {"max_steps": 12, "batch_size": 8, "val_every": 4, "val_batches": 1, "ckpt_every": 4,
                  "log_every": 2, "ema": 0.9}}


def test_resumed_run_keeps_earlier_rows_and_matches_an_uninterrupted_run(tiny, tmp_path):
    from dlm.train import train

    train(str(tiny), str(tmp_path / "plain" / "final.ckpt"), str(tmp_path / "plain"), HP, threads=1)
    plain = pd.read_csv(metrics_path(tmp_path / "plain" / "final.ckpt"))
    assert metrics_path(tmp_path / "plain" / "final.ckpt").name == "final_metrics.csv"
    assert list(plain.columns[:2]) == ["step", "epoch"] and {"train/loss", "val/nll", "val/ppl"} <= set(plain.columns)
    val = plain.dropna(subset=["val/nll"])
    assert val["step"].tolist() == [4, 8, 12] and (val["val/ppl"] > 1).all()
    assert plain["train/loss"].notna().sum() == 6  # every 2 of 12 steps

    run, out = tmp_path / "interrupted", tmp_path / "interrupted" / "final.ckpt"
    # the first job stops at step 7 (checkpoint on the signal), the second at step 10; the third finishes
    for batch in (5, 8):
        with pytest.raises(SystemExit) as exc:
            train(str(tiny), str(out), str(run), HP, threads=1, callbacks=[SignalAt(batch, signal.SIGUSR1)])
        assert exc.value.code == PREEMPTED_EXIT
    (csv_root,) = run.glob("checkpoints/*/csv")
    assert sorted(d.name for d in csv_root.iterdir()) == ["from_step_000000000", "from_step_000000007"]
    train(str(tiny), str(out), str(run), HP, threads=1)
    resumed = pd.read_csv(metrics_path(out))
    assert len(list(csv_root.iterdir())) == 3
    # every training-loss row kept once with the uninterrupted run's numbers; only the row of the step a signal
    # stopped at may be missing (Lightning logs a step's metrics after the callbacks that stopped it)
    key = ["step", "train/loss"]
    train_rows = lambda df: df.dropna(subset=["train/loss"])[key].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(train_rows(resumed), train_rows(plain)[train_rows(plain)["step"] != 10]
                                  .reset_index(drop=True))
    assert resumed.dropna(subset=["val/nll"])["step"].tolist() == val["step"].tolist()  # each validation once
    assert resumed.iloc[:3].equals(plain.iloc[:3])  # the first attempt's rows, before the resume at step 7


def test_merge_drops_rows_redone_after_a_resume(tmp_path):
    root = tmp_path / "csv"
    for start, steps in ((0, [2, 4, 6, 8]), (6, [6, 8, 10])):  # Lightning's 0-based indices
        d = root / f"from_step_{start:09d}"
        d.mkdir(parents=True)
        pd.DataFrame({"step": steps, "epoch": 0, "train/loss": [float(s + start) for s in steps]}).to_csv(
            d / "metrics.csv", index=False)
    df = merge_metrics(root)
    assert df["step"].tolist() == [3, 5, 7, 9, 11]  # steps done
    assert df["train/loss"].tolist() == [2.0, 4.0, 12.0, 14.0, 16.0]  # the resumed attempt's rows from step 6


@pytest.mark.parametrize("accumulate,batch", [(1, 5), (2, 8)], ids=["no-accumulation", "mid-accumulation"])
def test_validation_after_a_resume_matches_an_uninterrupted_run(tiny, tmp_path, accumulate, batch):
    """In-training validation (EMA weights, fixed generators) after a resume gives the uninterrupted run's
    numbers exactly: the checkpoint written on the signal holds the EMA of the step it stopped at (it was
    written before the module's on_train_batch_end had applied that step's update, so the resumed EMA lagged
    one update: val/nll 3.7404 instead of 3.6885 at step 8, and a different final EMA without accumulation)."""
    from test_resume import weights

    from dlm.train import train

    hp = {**HP, "trainer": {**HP["trainer"], "accumulate": accumulate}}
    plain_out = tmp_path / "plain" / "final.ckpt"
    train(str(tiny), str(plain_out), str(tmp_path / "plain"), hp, threads=1)
    run, out = tmp_path / "interrupted", tmp_path / "interrupted" / "final.ckpt"
    # no accumulation: stops after step 7, right before the validation at step 8 (val_every 4 batches);
    # accumulate 2: signalled on the first micro-batch of step 5, stops after it, validation at step 8
    with pytest.raises(SystemExit) as exc:
        train(str(tiny), str(out), str(run), hp, threads=1, callbacks=[SignalAt(batch, signal.SIGUSR1)])
    assert exc.value.code == PREEMPTED_EXIT
    train(str(tiny), str(out), str(run), hp, threads=1)

    cols = ["step", "epoch", "val/nll", "val/ppl"]
    val_rows = lambda df: df.dropna(subset=["val/nll"])[cols].reset_index(drop=True)  # noqa: E731
    plain, resumed = val_rows(pd.read_csv(metrics_path(plain_out))), val_rows(pd.read_csv(metrics_path(out)))
    # val_every counts optimiser steps, with or without accumulation
    assert plain["step"].tolist() == [4, 8, 12]
    pd.testing.assert_frame_equal(resumed, plain, check_exact=True)
    a, b = weights(plain_out), weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
