"""The Slurm profile for real on a single-node Slurm cluster (.ci/slurm-up.sh, started by the session fixture
below where none answers): one model's chain of the smoke config as Slurm jobs with GPU requests (fake gres
GPU), preemption of a real training job, an srun-launched two-task run, and the 2-node x 4-GPU submission."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAEMONS = ("munged", "slurmctld", "slurmd")
GPU_RULES = ("train", "sample", "val_ppl", "gen_ppl", "mauve", "mauve_reference")


def slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(state in out for state in ("idle", "mixed", "allocated"))


def _pids(name: str) -> set[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.fixture(scope="session")
def slurm_cluster():
    """A Slurm cluster that answers. One already running is used and left alone; otherwise, as root, this
    starts one with .ci/slurm-up.sh (Debian packages) and at the end stops, by PID, every daemon it started.
    Skips, saying why, where neither works (not root, no apt, the daemons do not come up)."""
    if slurm_up():
        yield "already running"
        return
    if os.geteuid() != 0:
        pytest.skip("no Slurm cluster answers, and starting one (apt packages, daemons) needs root")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("no Slurm cluster answers, and neither Slurm nor apt-get (to install it) is here")
    before = {d: _pids(d) for d in DAEMONS}
    res = subprocess.run(["bash", str(ROOT / ".ci" / "slurm-up.sh")], capture_output=True, text=True, timeout=600)
    started = sorted(p for d in DAEMONS for p in _pids(d) - before[d])
    if res.returncode != 0 or not slurm_up():
        _stop(started)
        pytest.skip(f"could not start a local Slurm cluster: {(res.stdout + res.stderr)[-400:]}")
    yield f"started (PIDs {started})"
    _stop(started)
    assert not any(Path(f"/proc/{p}").exists() for p in started), "a Slurm daemon this session started still runs"


def _stop(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.5)
    for pid in pids:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def submitted_jobs(log: str) -> dict[str, list[str]]:
    """rule -> the Slurm job ids Snakemake submitted for it (from the executor's log lines)."""
    jobs: dict[str, list[str]] = {}
    for jobid, rule in re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*slurm_logs/rule_(\w+)/", log):
        jobs.setdefault(rule, []).append(jobid)
    return jobs


@pytest.mark.slurm
def test_smoke_chain_runs_as_slurm_jobs(slurm_cluster, tmp_path):
    overlay = tmp_path / "one_run.yaml"
    overlay.write_text("evaluation: {judge: ar}\n"
                       "sampling: {plan: [{run: ar, sampler: ar, steps: [31]}]}\n")
    targets = ["results/eval/ar/val_ppl.json", "results/eval/ar/gen_ar_T31_s0.json"]
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--profile",
                          str(ROOT / "profiles" / "slurm"), "--configfile", str(ROOT / "config" / "smoke.yaml"),
                          str(overlay), "--directory", str(tmp_path / "work"), *targets],
                         capture_output=True, text=True, timeout=1200)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-5000:]
    jobs = submitted_jobs(log)
    for rule in ("corpus", "pack", "train", "sample", "gen_ppl", "val_ppl"):
        assert jobs.get(rule), f"rule {rule} was not submitted to Slurm"
    for rule, ids in jobs.items():  # the GPU rules asked Slurm for a GPU, the others did not
        for jobid in ids:
            shown = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True).stdout
            assert ("gres:gpu" in shown or "gres/gpu" in shown) == (rule in GPU_RULES), (rule, shown)
    for t in targets:
        assert (tmp_path / "work" / t).exists()


def _wait_job(job: str, timeout: float = 300) -> str:
    """Wait until Slurm job `job` has left the queue; its final 'State ExitCode' from scontrol."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        state = next((w.split("=")[1] for w in out.split() if w.startswith("JobState=")), "")
        if state and state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            code = next((w.split("=")[1] for w in out.split() if w.startswith("ExitCode=")), "")
            return f"{state} {code}"
        time.sleep(1)
    raise AssertionError(f"Slurm job {job} did not finish in {timeout} s")


@pytest.mark.slurm
def test_training_job_preempted_twice_on_slurm_resumes_to_the_uninterrupted_weights(slurm_cluster, packed, tmp_path):
    """A real Slurm training job gets SIGUSR1 (`scancel --signal=USR1`, what `--signal` sends before a time
    limit), saves and exits 75; resubmitted, it gets SIGTERM (`scancel --full`, as at preemption), saves and exits;
    the third job finishes. The weights equal those of a run that was never interrupted."""
    import torch
    import yaml

    from dlm.resume import PREEMPTED_EXIT
    from dlm.train import train

    hp = {"algo": "mdlm", "model": {"size": "nano", "dropout": 0.1}, "optim": {"lr": 3e-3, "warmup_steps": 5},
          "trainer": {"max_steps": 1000, "batch_size": 8, "val_every": 100, "val_batches": 1, "ckpt_every": 10_000,
                      "log_every": 1, "ema": 0.9}}
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(hp))
    out = tmp_path / "slurm" / "final.ckpt"
    stops = []
    # --full: Slurm signals the batch step (here the training process itself, by `exec`) too
    for i, scancel in enumerate((["--full", "--signal=USR1"], ["--full"], None)):
        log = tmp_path / f"train{i}.log"
        cmd = (f"exec {sys.executable} -m dlm.cli --log {log} train --data {packed} --run-config {cfg} "
               f"--out {out} --threads 1")
        job = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=1", f"--output={tmp_path}/slurm{i}.out",
                              f"--wrap={cmd}"], capture_output=True, text=True, check=True).stdout.strip()
        if scancel is not None:
            deadline = time.time() + 240
            while time.time() < deadline:  # wait until it trains, then signal it mid-run
                text = log.read_text() if log.exists() else ""
                if text.count(" loss ") >= 20:
                    break
                time.sleep(0.2)
            subprocess.run(["scancel", *scancel, job], check=True)
        state = _wait_job(job)
        text = log.read_text()
        if scancel is None:
            assert state.startswith("COMPLETED"), (state, text[-3000:])
        else:
            assert "saved" in text and f"exiting with code {PREEMPTED_EXIT}" in text, (state, text[-3000:])
            assert not out.exists()
            (last,) = (tmp_path / "slurm" / "checkpoints").glob("*/last.ckpt")
            stops.append(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
    assert 0 < stops[0] < stops[1] < 1000, stops
    assert "resuming from" in (tmp_path / "train2.log").read_text()

    train(str(packed), str(tmp_path / "plain" / "final.ckpt"), str(tmp_path / "plain"), hp, threads=1)
    a = torch.load(tmp_path / "plain" / "final.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(out, map_location="cpu", weights_only=True)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    for k in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]), k


FAKE_SBATCH = """#!/bin/sh
printf '%s\\n' "$@" >> "$FAKE_SBATCH_ARGS"
echo ==== >> "$FAKE_SBATCH_ARGS"
echo "sbatch: error: fake sbatch of the submission test" >&2
exit 1
"""


@pytest.mark.slurm
def test_submission_of_a_two_node_four_gpu_run(slurm_cluster, tmp_path):
    """What the Slurm profile submits for a 2-node x 4-GPU run (trainer.devices 4, num_nodes 2): one job of
    2 nodes with 4 tasks and 4 GPUs per node, whose command starts the ranks with srun; and on each retry
    more memory and runtime. A fake sbatch records the submissions (no cluster needed beyond the plugin)."""
    work = tmp_path / "work"
    smk_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile",
            str(ROOT / "config" / "smoke.yaml")]
    subprocess.run([*base, "--cores", "2", "--directory", str(work), "results/data/kjv-smoke/packed"],
                   check=True, capture_output=True, env=smk_env)
    overlay = tmp_path / "two_nodes.yaml"
    overlay.write_text("runs:\n  ar: {algo: ar, trainer: {devices: 4, num_nodes: 2, strategy: ddp}}\n")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(FAKE_SBATCH)
    (fake / "sbatch").chmod(0o755)
    args = tmp_path / "sbatch_args.txt"
    env = {**smk_env, "PATH": f"{fake}:{os.environ['PATH']}", "FAKE_SBATCH_ARGS": str(args)}
    res = subprocess.run([*base, str(overlay), "--profile", str(ROOT / "profiles" / "slurm"), "--directory",
                          str(work), "results/models/ar/final.ckpt"], capture_output=True, text=True, env=env,
                         timeout=300)
    log = res.stdout + res.stderr
    assert res.returncode != 0 and args.exists(), log[-3000:]
    subs = [s.split("\n") for s in args.read_text().split("====\n") if s.strip()]
    assert len(subs) == 4, log[-3000:]  # the first submission and 3 retries (profile: retries 3)
    first, last = subs[0], subs[-1]
    for flag in ("--nodes=2", "--ntasks-per-node=4", "--gres=gpu:4", "--signal=TERM@180"):
        assert flag in first, (flag, first)
    assert "rule_train_srun_wildcards_ar" in first
    t, mem = first[first.index("-t") + 1], first[first.index("--mem") + 1]
    assert (t, mem) == ("1440", "16000")
    assert (last[last.index("-t") + 1], last[last.index("--mem") + 1]) == ("5760", "64000")  # attempt 4
    # the job's command starts one rank per task with srun, with the run's devices and nodes
    assert "srun " in log and '"devices": 4, "num_nodes": 2' in log


@pytest.mark.slurm
def test_srun_launched_ddp_run_trains_as_one_job_of_two_tasks(slurm_cluster, tmp_path):
    """trainer.launch: srun through the Slurm profile: one job of 2 tasks, srun starts both ranks (gloo on the
    CPU here), Lightning takes Slurm's ranks, and the final checkpoint carries both ranks' RNG states."""
    import torch

    overlay = tmp_path / "srun.yaml"
    overlay.write_text("runs:\n  ar: {algo: ar, trainer: {devices: 2, launch: srun, strategy: ddp, max_steps: 8, "
                       "batch_size: 8}}\n")
    work = tmp_path / "work"
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--profile",
                          str(ROOT / "profiles" / "slurm"), "--configfile", str(ROOT / "config" / "smoke.yaml"),
                          str(overlay), "--set-resources", "train_srun:gres=gpu:1",  # the test cluster has one
                          "--directory", str(work), "results/models/ar/final.ckpt"],
                         capture_output=True, text=True, timeout=1200)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-5000:]
    assert "slurm_logs/rule_train_srun/" in log
    logs = work / "logs" / "train"
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in (logs / "ar.log").read_text()  # rank 0 writes the rule's log,
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (logs / "ar.log.rank1").read_text()  # rank 1 its own beside it
    assert "ranks are Slurm tasks: task 1 of 2" in (logs / "ar.log.rank1").read_text()  # started by srun
    ckpt = torch.load(work / "results" / "models" / "ar" / "final.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 8 and len(ckpt["rng_states"]) == 2
