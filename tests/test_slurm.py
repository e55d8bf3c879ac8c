"""The Slurm profile for real on a single-node Slurm cluster (.ci/slurm-up.sh, started by the session fixture
below where none answers): one model's chain of the smoke config as Slurm jobs with GPU requests (fake gres
GPU), preemption of a real training job, a run longer than a 1-minute partition's limit trained in a chain of
requeued jobs (and a diverging run that fails instead), an srun-launched two-task run, the 2-node x 4-GPU
submission, and `snakemake --profile slurm` by name after `make slurm-profile`."""

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


def snakemake_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args]


def prepare_data(work: Path) -> None:
    """The smoke config's corpus, tokenizer and packed blocks, built on this host (no Slurm jobs)."""
    subprocess.run(snakemake_cmd("--configfile", str(ROOT / "config" / "smoke.yaml"), "--cores", "2", "--directory",
                                 str(work), "results/data/kjv-smoke/packed"),
                   check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


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
    2 nodes with 4 tasks and 4 GPUs per node, requeueable (the chain of jobs), whose command starts the ranks
    with srun; the retry asks for the same time and memory (training resumes; it needs no more). A fake sbatch
    records the submissions (no cluster needed beyond the plugin)."""
    work = tmp_path / "work"
    prepare_data(work)
    overlay = tmp_path / "two_nodes.yaml"
    overlay.write_text("runs:\n  ar: {algo: ar, trainer: {devices: 4, num_nodes: 2, strategy: ddp}}\n")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(FAKE_SBATCH)
    (fake / "sbatch").chmod(0o755)
    args = tmp_path / "sbatch_args.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{fake}:{os.environ['PATH']}", "FAKE_SBATCH_ARGS": str(args)}
    res = subprocess.run(snakemake_cmd("--configfile", str(ROOT / "config" / "smoke.yaml"), str(overlay), "--profile",
                                       str(ROOT / "profiles" / "slurm"), "--directory", str(work),
                                       "results/models/ar/final.ckpt"), capture_output=True, text=True, env=env,
                         timeout=300)
    log = res.stdout + res.stderr
    assert res.returncode != 0 and args.exists(), log[-3000:]
    subs = [s.split("\n") for s in args.read_text().split("====\n") if s.strip()]
    assert len(subs) == 2, log[-3000:]  # the first submission and one retry (profile: retries 1)
    for flags in subs:
        for flag in ("--nodes=2", "--ntasks-per-node=4", "--gres=gpu:4", "--requeue", "--open-mode=append"):
            assert flag in flags, (flag, flags)
        assert not any(f.startswith("--signal") for f in flags), flags  # the job stops itself before its limit
        assert (flags[flags.index("-t") + 1], flags[flags.index("--mem") + 1]) == ("1440", "16000")
    assert "rule_train_srun_wildcards_ar" in subs[0]
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


@pytest.fixture
def short_partition(slurm_cluster):
    """A partition whose jobs may run 1 minute (MaxTime=1, Slurm's shortest), as a site's short queue, over the cluster's nodes;
    deleted afterwards. Creating one needs Slurm administrator rights (root here): skipped without them."""
    name = "dlm_1min"
    subprocess.run(["scontrol", "delete", f"PartitionName={name}"], capture_output=True)
    res = subprocess.run(["scontrol", "create", f"PartitionName={name}", "Nodes=ALL", "MaxTime=1", "State=UP"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot create a 1-minute Slurm partition: {(res.stderr or res.stdout).strip()}")
    yield name
    subprocess.run(["scontrol", "delete", f"PartitionName={name}"], capture_output=True)


def site_profile(dest: Path, partition: str, minutes: int) -> Path:
    """profiles/slurm as a site edits it: train's partition and its time limit (`runtime`), nothing else."""
    import yaml

    shutil.copytree(ROOT / "profiles" / "slurm", dest)
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    cfg["set-resources"]["train"].update(slurm_partition=partition, runtime=minutes)
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def resolved_run(configfiles: list[Path], run: str) -> dict:
    """The settings the train rule hands `dlm.train.train` for `run`: the --configfile files merged in order,
    checked and completed as rules/common.smk does. (The Snakefile's `configfile: "config/config.yaml"` is
    relative to the working directory: a --directory without that file reads the --configfile files only.)"""
    import yaml
    from snakemake.utils import update_config

    from dlm.config import apply_defaults, check_config, expand_seeds, resolve_run

    cfg: dict = {}
    for f in configfiles:
        update_config(cfg, yaml.safe_load(Path(f).read_text()))
    schema = str(ROOT / "config" / "schema.yaml")
    check_config(cfg, schema)
    apply_defaults(cfg, schema)
    expand_seeds(cfg)
    return resolve_run(cfg, run)


def steps_per_second(packed: Path, hp: dict, run_dir: Path, seconds: float = 8.0) -> float:
    """Optimiser steps per second of this run on this host (2 threads, as the job), measured over `seconds`
    after the first 3 steps."""
    import lightning as L

    from dlm.train import train

    class Clock(L.Callback):
        def __init__(self):
            self.t0 = self.n = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                self.t0 = time.perf_counter()
            elif self.t0 is not None and time.perf_counter() - self.t0 >= seconds:
                self.n, trainer.should_stop = trainer.global_step - 3, True

    hp = {**hp, "trainer": {**hp["trainer"], "max_steps": 100_000}}
    clock = Clock()
    train(str(packed), str(run_dir / "final.ckpt"), str(run_dir), hp, threads=2, callbacks=[clock])
    return clock.n / seconds


def job_record(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return dict(w.split("=", 1) for w in out.split() if "=" in w)


@pytest.mark.slurm
def test_run_longer_than_the_partition_time_limit_trains_in_a_chain_of_jobs(slurm_cluster, short_partition, tmp_path):
    """A site's partition caps jobs at 1 minute; a run needs more than one job's worth of training (about 48 s
    on this host, measured first; a job trains at most 40 s). Through Snakemake with the shipped profile, edited
    only as a site would (train's partition and runtime: 1): each job stops itself 20 s before the limit, saves
    and requeues itself, the next run of the same job resumes, and the last one writes the final checkpoint,
    whose weights equal those of an uninterrupted run (trained meanwhile outside Slurm, at the lowest CPU
    priority so that the chain trains at the measured speed). No job reaches its time limit and none is a
    Snakemake retry. A run that diverges (a non-finite loss at step 1) in the same workflow fails, once and once
    more on the profile's retry, without being requeued."""
    import json

    import torch
    import yaml

    work = tmp_path / "work"
    prepare_data(work)
    packed = work / "results" / "data" / "kjv-smoke" / "packed"
    smoke = ROOT / "config" / "smoke.yaml"
    overlay = tmp_path / "chain.yaml"
    runs = {"chain": {"algo": "mdlm", "trainer": {"val_every": 10_000, "ckpt_every": 10_000, "log_every": 20}},
            "diverge": {"algo": "mdlm", "optim": {"lr": 1.0e37}}}
    overlay.write_text(yaml.safe_dump({"runs": runs}))
    rate = steps_per_second(packed, resolved_run([smoke, overlay], "chain"), tmp_path / "clock")
    steps = max(10, round(48 * rate))  # 1.2 x what one job can train at most (40 s of a 1-minute job)
    runs["chain"]["trainer"]["max_steps"] = steps
    overlay.write_text(yaml.safe_dump({"runs": runs}))
    hp = resolved_run([smoke, overlay], "chain")
    assert hp["trainer"]["max_steps"] == steps

    reference = subprocess.Popen(["nice", "-n", "19", sys.executable, "-m", "dlm.cli", "--log",
                                  str(tmp_path / "reference.log"), "train", "--data", str(packed), "--hp",
                                  json.dumps(hp), "--out", str(tmp_path / "reference" / "final.ckpt"),
                                  "--threads", "2"])
    profile = site_profile(tmp_path / "profile", short_partition, 1)
    targets = ["results/models/chain/final.ckpt", "results/models/diverge/final.ckpt"]
    res = subprocess.run(snakemake_cmd("--profile", str(profile), "--configfile", str(smoke), str(overlay),
                                       "--directory", str(work), "--keep-going", "--slurm-keep-successful-logs",
                                       *targets),
                         capture_output=True, text=True, timeout=2400)
    assert reference.wait(timeout=1200) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    log = res.stdout + res.stderr
    assert res.returncode != 0, log[-5000:]  # the diverging run failed...
    assert (work / targets[0]).exists() and not (work / targets[1]).exists(), log[-5000:]  # ...the chain did not

    jobs: dict[str, list[str]] = {}
    for run, job in re.findall(r"submitted with SLURM jobid \d+ \(log: \S*slurm_logs/rule_train/(\w+)/(\d+)\.log", log):
        jobs.setdefault(run, []).append(job)
    (chain_job,) = jobs["chain"]  # one submission: the chain is one Slurm job id, requeued, never a retry
    rec = job_record(chain_job)
    links = int(rec["Restarts"]) + 1
    assert rec["JobState"] == "COMPLETED" and rec["Partition"] == short_partition and rec["TimeLimit"] == "00:01:00"
    assert links >= 2, rec
    slurm_log = (work / ".snakemake" / "slurm_logs" / "rule_train" / "chain" / f"{chain_job}.log").read_text()
    requeued = re.findall(rf"\*\*\* JOB {chain_job} ON \S+ CANCELLED AT (\S+) DUE TO JOB REQUEUE", slurm_log)
    assert len(requeued) == links - 1 and "TIME LIMIT" not in slurm_log, slurm_log[-3000:]
    # every job of the chain advanced the run (one training-curve directory per job, each from a later step)
    (ckpt_dir,) = (work / "results" / "models" / "chain" / "checkpoints").iterdir()
    assert len(list((ckpt_dir / "csv").iterdir())) == links
    last_log = (work / "logs" / "train" / "chain.log").read_text()
    assert "resuming from" in last_log and "requeueing" not in last_log  # the last job: resumed and finished

    a = torch.load(tmp_path / "reference" / "final.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(work / targets[0], map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == steps
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    for k in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]), k

    assert len(jobs["diverge"]) == 2, log[-5000:]  # the first job and the profile's one retry, then it stopped
    for job in jobs["diverge"]:  # each ended FAILED, not requeued (Slurm forgets it after MinJobAge: the log says)
        assert f"SLURM-job '{job}' failed, SLURM status is: 'FAILED'" in log, log[-5000:]
    assert re.search(r"run 'diverge': the training loss is (nan|inf) at optimiser step 1 ",
                     (work / "logs" / "train" / "diverge.log").read_text())
    print(f"chain: {steps} steps ({rate:.2f} steps/s measured) in {links} runs of one Slurm job of at most 1 minute,"
          f" requeued at {requeued}")


def test_profile_by_name_after_make_slurm_profile(tmp_path):
    """`snakemake --profile slurm` from the repository root: refused before the one setup step (Snakemake looks
    for profiles by name in ~/.config/snakemake and /etc/xdg/snakemake), found after `make slurm-profile`, which
    links profiles/slurm there (here HOME is tmp_path/home). No cluster needed: a dry run."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env.update(HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--dry-run", "--configfile",
           str(ROOT / "config" / "smoke.yaml"), "--directory", str(tmp_path / "work"), "results/models/ar/final.ckpt"]
    before = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert before.returncode != 0 and "profile directory given (slurm), but no profile.yaml" in before.stderr
    subprocess.run(["make", "--no-print-directory", "slurm-profile"], cwd=ROOT, check=True, capture_output=True,
                   env=env)
    link = tmp_path / "home" / ".config" / "snakemake" / "slurm"
    assert link.is_symlink() and link.resolve() == (ROOT / "profiles" / "slurm").resolve()
    after = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    log = after.stdout + after.stderr
    assert after.returncode == 0, log[-3000:]
    assert "Using profile slurm" in log and "slurm_partition=debug" in log and "slurm_extra=--open-mode=append" in log
    # a second `make slurm-profile` keeps the link; a real folder in its place is not overwritten
    subprocess.run(["make", "--no-print-directory", "slurm-profile"], cwd=ROOT, check=True, capture_output=True,
                   env=env)
    link.unlink()
    link.mkdir()
    res = subprocess.run(["make", "--no-print-directory", "slurm-profile"], cwd=ROOT, capture_output=True, text=True,
                         env=env)
    assert res.returncode != 0 and "exists and is not a link" in res.stderr
