"""No checkpoint runs code: every path that reads a checkpoint, a model folder, a tokenizer or a cache refuses a
hostile file before anything in it runs (docs/security.md).

The hostile files carry a payload that creates a marker file when unpickled (or, for a folder, when its Python is
imported); each test asserts the marker does not exist afterwards. `test_the_payloads_run_when_trusted` shows the
payloads are live, so these tests fail if a path ever unpickles or imports them.
"""

from __future__ import annotations

import json
import os
import pickle
import runpy

import lightning as L
import numpy as np
import pytest
import torch

from dlm.checkpoints.safe_load import UnsafeCheckpointError, load_checkpoint
from dlm.cli import main

KINDS = ["torch zip", "plain pickle"]
REFUSED = r"(posix|nt)\.system"  # the global os.system pickles as


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_hostile(path, kind: str, marker) -> str:
    """A file shaped like a checkpoint of ours (method hyper-parameters, state_dict, step) whose step is the
    payload: a torch.save zip file, or a plain pickle (protocol 4) renamed .ckpt."""
    ckpt = {"hyper_parameters": {"method": {"algo": "mdlm", "vocab_size": 8, "block_length": 4}},
            "state_dict": {"method.backbone.embedding": torch.zeros(8, 4)}, "global_step": Payload(marker)}
    if kind == "torch zip":
        torch.save(ckpt, path)
    else:
        path.write_bytes(pickle.dumps(ckpt, protocol=4))
    return str(path)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "the hostile file's code ran"


@pytest.fixture(params=KINDS)
def hostile(request, tmp_path, marker):
    return write_hostile(tmp_path / "evil.ckpt", request.param, marker)


def test_the_payloads_run_when_trusted(tmp_path):
    """The hostile files used below do run their code under a full unpickle (so the tests can fail)."""
    for i, kind in enumerate(KINDS):
        m = tmp_path / f"ran{i}"
        path = write_hostile(tmp_path / f"evil{i}.ckpt", kind, m)
        if kind == "torch zip":
            torch.load(path, weights_only=False)
        else:
            with open(path, "rb") as f:
                pickle.load(f)
        assert m.exists(), kind
    np.savez(tmp_path / "cache.npz", gamma=np.array([Payload(tmp_path / "ran_npz")], dtype=object))
    np.load(tmp_path / "cache.npz", allow_pickle=True)["gamma"]
    assert (tmp_path / "ran_npz").exists()


def test_own_checkpoints_name_only_allowed_globals(real_ckpt):
    from dlm.checkpoints.safe_load import foreign_globals

    assert foreign_globals(real_ckpt) == []
    assert load_checkpoint(real_ckpt)["state_dict"]


def test_loader_names_the_file_and_the_global(hostile):
    with pytest.raises(UnsafeCheckpointError, match=REFUSED) as e:
        load_checkpoint(hostile)
    assert repr(hostile) in str(e.value) and "nothing of it was run" in str(e.value)


def _sample(path, tmp_path, capsys):
    return main(["sample", "--ckpt", path, "--sampler", "mdlm_ancestral", "--steps", "2", "--num-samples", "1",
                 "--out", str(tmp_path / "out.jsonl")]), capsys.readouterr().err


def _val_ppl(path, tmp_path, capsys):
    return main(["val-ppl", "--ckpt", path, "--data", str(tmp_path), "--device", "cpu",
                 "--out", str(tmp_path / "out.json")]), capsys.readouterr().err


def _gen_ppl(path, tmp_path, capsys):  # a run of ours as the judge
    (tmp_path / "texts.jsonl").write_text(json.dumps({"text": "In the beginning"}) + "\n")
    return main(["gen-ppl", "--texts", str(tmp_path / "texts.jsonl"), "--judge", path, "--out",
                 str(tmp_path / "out.json")]), capsys.readouterr().err


@pytest.mark.parametrize("command", [_sample, _val_ppl, _gen_ppl], ids=["sample", "val-ppl", "gen-ppl"])
def test_cli_refuses_a_hostile_checkpoint(command, hostile, tmp_path, capsys):
    rc, err = command(hostile, tmp_path, capsys)
    assert rc == 2 and hostile in err and "refused" in err and "Traceback" not in err
    assert not list(tmp_path.glob("out.*"))


def test_python_api_and_zero_shot_refuse_a_hostile_checkpoint(hostile, tmp_path):
    import dlm
    from dlm.evaluation.judge import load_judge
    from dlm.evaluation.zero_shot import evaluate_zero_shot

    with pytest.raises(UnsafeCheckpointError, match=REFUSED):
        dlm.load(hostile, device="cpu")
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):  # zero-shot with a run of ours as the model
        evaluate_zero_shot(hostile, {"pydoc": str(tmp_path)}, 4, 0, str(tmp_path / "zs.json"), device="cpu")
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):  # the judge of gen PPL, zero-shot and MAUVE rows
        load_judge(hostile).tokenizer
    assert not (tmp_path / "zs.json").exists()


TRAIN_HP = {"algo": "mdlm", "model": {"size": "nano", "dropout": 0.0}, "optim": {"warmup_steps": 1},
            "trainer": {"max_steps": 2, "batch_size": 4, "val_every": 2, "val_batches": 1, "ckpt_every": 1,
                        "log_every": 1, "ema": 0.9}}


def test_resume_refuses_a_hostile_last_ckpt(packed, hostile, tmp_path):
    """Training resumes from run_dir/checkpoints/<hash>/last.ckpt: a hostile one there is refused (both the step
    count dlm.train reads and Lightning's own restore go through the safe loader)."""
    from dlm.train import checkpoint_dir, train

    last = checkpoint_dir(tmp_path / "run", TRAIN_HP, str(packed)) / "last.ckpt"
    last.parent.mkdir(parents=True)
    os.replace(hostile, last)
    with pytest.raises(UnsafeCheckpointError, match=REFUSED) as e:
        train(str(packed), str(tmp_path / "run" / "final.ckpt"), str(tmp_path / "run"), TRAIN_HP, threads=1)
    assert str(last) in str(e.value) and not (tmp_path / "run" / "final.ckpt").exists()


def test_lightning_restore_reads_through_the_safe_loader(packed, hostile, tmp_path):
    """Trainer.fit(ckpt_path=...) with the plugins dlm.train gives every Trainer: Lightning's own torch.load
    (weights_only=None, which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns into a full unpickle) is never used."""
    from dlm.train import SafeCheckpointIO, build_module, loaders, resolve_trainer, trainer_plugins

    plugins = trainer_plugins(resolve_trainer(TRAIN_HP))
    assert any(isinstance(p, SafeCheckpointIO) for p in plugins)
    trainer = L.Trainer(max_steps=2, plugins=plugins, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0)
    train_dl, _ = loaders(str(packed), 4, 0)
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):
        trainer.fit(build_module(str(packed), TRAIN_HP), train_dl, ckpt_path=hostile)


def test_distillation_refuses_a_hostile_starting_checkpoint(packed, hostile, tmp_path):
    """The teacher and the student of a round both come from its starting checkpoint."""
    from dlm.distill import distill_round
    from dlm.train import train

    hp = {"algo": "sdtt", "algo_args": {"T": 8}, "trainer": TRAIN_HP["trainer"]}
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):
        distill_round(hostile, str(tmp_path / "round_1.ckpt"), str(packed), str(tmp_path), hp, 0, threads=1)
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):  # any run started from a checkpoint
        train(str(packed), str(tmp_path / "final.ckpt"), str(tmp_path), TRAIN_HP, threads=1, init_ckpt=hostile)
    assert not (tmp_path / "round_1.ckpt").exists() and not (tmp_path / "final.ckpt").exists()


def test_integral_cache_with_a_pickled_object_is_refused(tmp_path, marker):
    from dlm.diffusion.integral import CACHE_KEYS, load_cache

    arrays = {k: np.zeros(3) for k in CACHE_KEYS}
    arrays["gamma"] = np.array([Payload(marker)], dtype=object)
    np.savez(tmp_path / "integral.npz", **arrays)
    with pytest.raises(ValueError, match=r"integral cache .*integral\.npz.*allow_pickle=False"):
        load_cache(tmp_path / "integral.npz")


# --- folders read through transformers: judges, MAUVE featurizers, tokenizers, imported hub folders ---------

@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny GPT-2 (safetensors) with the GPT-2 tokenizer files (offline)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from dlm.data.tokenizer import write_offline_gpt2

    d = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    write_offline_gpt2(str(d))
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, n_positions=16, vocab_size=50257)).save_pretrained(d)
    return d


def copy_folder(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def add_custom_code(folder, marker, model_type=None):
    """auto_map entries in config.json and tokenizer_config.json naming the folder's own evil.py, whose import
    creates `marker` (what trust_remote_code=True would run)."""
    (folder / "evil.py").write_text(f"import os\nos.system('touch {marker}')\n"
                                    "from transformers import GPT2Config as EvilConfig\n"
                                    "from transformers import GPT2LMHeadModel as EvilModel\n"
                                    "from transformers import GPT2Tokenizer as EvilTokenizer\n")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel",
                       "AutoModelForCausalLM": "evil.EvilModel"}
    if model_type:
        cfg["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(cfg))
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    tc["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    if model_type:
        tc["tokenizer_class"] = "EvilTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))


def test_custom_code_is_live(gpt2_folder, tmp_path):
    folder = copy_folder(gpt2_folder, tmp_path / "m")
    add_custom_code(folder, tmp_path / "ran")
    runpy.run_path(str(folder / "evil.py"))
    assert (tmp_path / "ran").exists()


def test_pickle_bin_only_folder_is_refused(gpt2_folder, tmp_path, marker):
    """A folder whose only weights are a hostile pytorch_model.bin: transformers reads it through
    torch.load(weights_only=True) and refuses it, for the judge and the MAUVE featurizer alike."""
    from dlm.evaluation.judge import load_judge
    from dlm.evaluation.mauve import Featurizer

    folder = copy_folder(gpt2_folder, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    torch.save({"transformer.wte.weight": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(pickle.UnpicklingError, match="posix.system"):
        load_judge(str(folder))
    with pytest.raises(pickle.UnpicklingError, match="posix.system"):
        Featurizer(str(folder))


def test_safetensors_are_preferred_to_a_pickle(gpt2_folder, tmp_path, marker):
    from dlm.evaluation.judge import load_judge

    folder = copy_folder(gpt2_folder, tmp_path / "m")
    torch.save({"transformer.wte.weight": Payload(marker)}, folder / "pytorch_model.bin")
    judge = load_judge(str(folder))
    assert judge.max_length == 16 and judge.logits(torch.tensor([[1, 2]]), torch.ones(1, 2)).shape == (1, 2, 50257)


def test_repository_code_never_runs(gpt2_folder, tmp_path, marker):
    """trust_remote_code is off: a config / tokenizer_config with auto_map pointing at the folder's Python gets
    transformers' built-in class of its model_type, or (an unknown type) an error; the Python is never imported."""
    from dlm.data.tokenizer import load_tokenizer
    from dlm.evaluation.judge import load_judge
    from dlm.evaluation.mauve import Featurizer

    folder = copy_folder(gpt2_folder, tmp_path / "known")
    add_custom_code(folder, marker)
    assert type(load_judge(str(folder)).model).__name__ == "GPT2LMHeadModel"
    assert type(Featurizer(str(folder)).model).__name__ == "GPT2Model"
    assert type(load_tokenizer(folder)).__name__.startswith("GPT2Tokenizer")
    folder = copy_folder(gpt2_folder, tmp_path / "unknown")
    add_custom_code(folder, marker, model_type="evil_lm")
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_tokenizer(folder)
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_judge(str(folder))


def test_import_of_a_hub_folder_runs_none_of_its_code(gpt2_folder, tmp_path, marker):
    """`dlm import` of a model folder with custom code and a hostile pickle: its tokenizer is read without the
    folder's Python, its weights through the weights-only loader; nothing is written."""
    from dlm.checkpoints.convert import import_checkpoint

    folder = copy_folder(gpt2_folder, tmp_path / "m")
    add_custom_code(folder, marker)
    (folder / "model.safetensors").unlink()
    torch.save({"backbone.vocab_embed.embedding": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        import_checkpoint(folder, "mdlm", tmp_path / "out.ckpt")
    assert not (tmp_path / "out.ckpt").exists()
