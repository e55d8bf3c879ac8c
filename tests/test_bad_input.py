"""Bad input fails early and clearly: every class of bad input raises an error that names the problem (the
file, the config key, the value and what was expected), through the entry points a user hits (the config
check, the corpus reader, `dlm.load` / `Model.generate`, `load_module`, `run_sampler`, val PPL and the
`dlm` command), before any result is written and without touching results already there."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from dlm.algos import get_method, load_module
from dlm.api import Model
from dlm.cli import main
from dlm.config import ConfigError, check_config
from dlm.data.corpora import write_corpus
from dlm.data.dataset import read_meta
from dlm.evaluation.val_ppl import evaluate_ppl
from dlm.sampling import run_sampler
from dlm.sampling.common import Conditioning

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "config" / "schema.yaml")
OLD = "an earlier result\n"


def smoke_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())


def old_result(path: Path) -> Path:
    """A result file produced earlier, which a failing step must leave as it is."""
    path.write_text(OLD)
    return path


def save_method(path: Path, packed: Path, algo: str = "mdlm", **over) -> Path:
    """A checkpoint in the layout `load_module` reads (hyper_parameters.method + state_dict), for the
    packed data's tokenizer; `over` changes constructor arguments (vocab_size, block_length, algo_args)."""
    meta = read_meta(packed)
    hp = {"algo": algo, "vocab_size": meta["vocab_size"], "block_length": meta["block_length"],
          "special_ids": meta["special_ids"], "tokenizer_dir": meta["tokenizer_dir"],
          "model": {"size": "nano", "dropout": 0.0}, **over}
    method = get_method(algo)(**{k: v for k, v in hp.items() if k != "algo"})
    torch.save({"hyper_parameters": {"method": hp}, "global_step": 0,
                "state_dict": {f"method.{k}": v for k, v in method.state_dict().items()}}, path)
    return path


def cli(capsys, *argv) -> tuple[int, str]:
    """Run `dlm ARGV` in-process; (exit code, stderr)."""
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


# ------------------------------------------------------------------------------------- 1, 2: config
def test_unknown_config_key_names_its_path_the_keys_allowed_and_the_closest():
    cfg = smoke_config()
    cfg["train_defaults"]["trainer"]["max_stepz"] = 5  # a typo
    with pytest.raises(ConfigError) as e:
        check_config(cfg, SCHEMA, "smoke.yaml")
    msg = str(e.value)
    assert "smoke.yaml" in msg
    assert "key 'train_defaults.trainer.max_stepz': unknown key" in msg
    assert "expected one of [" in msg and "'batch_size'" in msg and "did you mean 'max_steps'?" in msg


@pytest.mark.parametrize("path,value,expected", [
    (["train_defaults", "trainer", "batch_size"], "big", "'big' is not of type 'integer'"),  # wrong type
    (["train_defaults", "trainer", "max_steps"], 0, "0 is less than the minimum of 1"),  # out of range
    (["data", "packing"], "wrapp", "'wrapp' is not one of ['wrap', 'wrap_bos', 'pad']"),  # bad enum
])
def test_invalid_config_value_names_key_value_and_expectation(path, value, expected):
    cfg = smoke_config()
    node = cfg
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as e:
        check_config(cfg, SCHEMA, "smoke.yaml")
    msg = str(e.value)
    assert f"key '{'.'.join(path)}': value {value!r} is invalid" in msg
    assert expected in msg and "(expected: " in msg


# ------------------------------------------------------------------------------------- 3, 4: corpora
@pytest.mark.parametrize("empty_split", ["train", "valid"])
def test_empty_corpus_file_names_the_split_and_the_file_and_keeps_old_outputs(tmp_path, empty_split):
    files = {s: tmp_path / f"{s}.txt" for s in ("train", "valid")}
    for s, f in files.items():
        f.write_text("\n \n\t\n" if s == empty_split else "In the beginning.\n\nAnd the earth.\n")
    outs = [old_result(tmp_path / "out_train.jsonl"), old_result(tmp_path / "out_valid.jsonl")]
    with pytest.raises(ValueError) as e:
        write_corpus({"kind": "text_files", **{s: str(f) for s, f in files.items()}}, *map(str, outs))
    msg = str(e.value)
    assert f"no documents for the {empty_split!r} split" in msg
    assert f"input {files[empty_split]} has no non-blank text" in msg and "expected at least one document" in msg
    assert [o.read_text() for o in outs] == [OLD, OLD]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_train.jsonl", "out_valid.jsonl", "train.txt",
                                                          "valid.txt"]  # no temporary file left behind


def test_invalid_utf8_corpus_fails_naming_file_offset_and_line(tmp_path):
    # policy: fail (replacing the bytes would change the tokens and so every perplexity on the corpus)
    good = tmp_path / "valid.txt"
    good.write_text("Blessed are the meek.\n")
    bad = tmp_path / "train.txt"
    bad.write_bytes("In the beginning.\n\nGod cr".encode() + b"\xff" + "eated the heaven.\n".encode())
    out_train, out_valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    with pytest.raises(ValueError) as e:
        write_corpus({"kind": "text_files", "train": str(bad), "valid": str(good)}, str(out_train), str(out_valid))
    msg = str(e.value)
    assert f"{bad}: invalid UTF-8 at byte offset 25 (line 3, byte 7 of the line): b'\\xff'" in msg
    assert "expected a UTF-8 text file" in msg
    assert not out_train.exists() and not out_valid.exists()


# ------------------------------------------------------------------------ 5, 6: vocabulary size K
def test_tokenizer_or_data_of_another_vocabulary_size_is_refused(packed, tmp_path, capsys):
    ckpt = save_method(tmp_path / "k500.ckpt", packed, vocab_size=500)  # the packed tokenizer has K = 300
    tok_dir = read_meta(packed)["tokenizer_dir"]
    with pytest.raises(ValueError) as e:
        Model.load(str(ckpt), device="cpu")
    msg = str(e.value)
    assert str(ckpt) in msg and "vocab_size 500" in msg and f"tokenizer {tok_dir} gives K = 300" in msg
    out = old_result(tmp_path / "val.json")
    with pytest.raises(ValueError) as e:
        evaluate_ppl(str(ckpt), str(packed), "valid", 8, 1, str(out), device="cpu")
    msg = str(e.value)
    assert f"packed data {packed} has vocab_size 300" in msg and f"checkpoint {ckpt} has vocab_size 500" in msg
    assert out.read_text() == OLD
    samples = old_result(tmp_path / "s.jsonl")
    rc, err = cli(capsys, "sample", "--ckpt", ckpt, "--sampler", "mdlm_ancestral", "--steps", 2, "--num-samples", 1,
                  "--device", "cpu", "--out", samples)
    assert rc == 2 and "vocab_size 500" in err and "K = 300" in err and samples.read_text() == OLD


def test_integral_cache_of_another_vocabulary_size_is_refused(packed, tmp_path, capsys):
    cache = tmp_path / "k200.npz"
    assert cli(capsys, "integral", "--vocab-size", 200, "--points", 50, "--out", cache)[0] == 0
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({
        "algo": "duo", "model": {"size": "nano", "dropout": 0.0}, "algo_args": {"integral_path": str(cache)},
        "trainer": {"max_steps": 2, "batch_size": 4, "val_every": 2, "val_batches": 1, "ckpt_every": 2,
                    "log_every": 1, "ema": 0.9}}))
    out = tmp_path / "model" / "final.ckpt"
    rc, err = cli(capsys, "train", "--data", packed, "--run-config", run, "--out", out, "--threads", 1)
    assert rc == 2
    assert f"integral cache {str(cache)!r} was computed for vocab_size 200" in err
    assert "the model has vocab_size 300 (K must match)" in err
    assert not out.exists()


# ------------------------------------------------------------------------------- 7, 8: checkpoint files
def test_missing_checkpoint_names_the_path(tmp_path, capsys):
    missing = tmp_path / "results" / "models" / "mdlm" / "final.ckpt"
    with pytest.raises(FileNotFoundError) as e:
        load_module(str(missing))
    assert f"checkpoint {str(missing)!r} not found" in str(e.value)
    with pytest.raises(FileNotFoundError, match="is a directory, not a file"):
        load_module(str(tmp_path))
    out = old_result(tmp_path / "val.json")
    rc, err = cli(capsys, "val-ppl", "--ckpt", missing, "--data", tmp_path, "--device", "cpu", "--out", out)
    assert rc == 2 and f"dlm val-ppl: error: checkpoint {str(missing)!r} not found" in err
    assert out.read_text() == OLD


def test_truncated_checkpoint_names_the_path_instead_of_a_zip_traceback(real_ckpt, packed, tmp_path, capsys):
    data = real_ckpt.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[:len(data) // 2])
    for load in (load_module, lambda p: Model.load(p, device="cpu")):
        with pytest.raises(ValueError) as e:
            load(str(cut))
        msg = str(e.value)
        assert f"checkpoint {str(cut)!r} ({len(data) // 2} bytes) is truncated or not a torch checkpoint" in msg
        assert isinstance(e.value.__cause__, RuntimeError)  # torch's own error is kept as the cause
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="is truncated or not a torch checkpoint"):
        load_module(str(text))
    out = old_result(tmp_path / "val.json")
    rc, err = cli(capsys, "val-ppl", "--ckpt", cut, "--data", packed, "--device", "cpu", "--out", out)
    assert rc == 2 and str(cut) in err and "truncated" in err and "Traceback" not in err
    assert out.read_text() == OLD
    assert load_module(str(real_ckpt)).algo == "mdlm"  # the intact file still loads


# ---------------------------------------------------------------- 9, 10: methods and sampler names
def test_sampler_of_another_method_names_both_algos(real_ckpt, tmp_path, capsys):
    model = Model.load(str(real_ckpt), device="cpu")
    with pytest.raises(ValueError) as e:
        model.generate(1, sampler="duo_ancestral", steps=2)
    assert "sampler 'duo_ancestral' applies to ['udlm', 'duo', 'dcd'], not to a 'mdlm' model" in str(e.value)
    out = old_result(tmp_path / "s.jsonl")
    rc, err = cli(capsys, "sample", "--ckpt", real_ckpt, "--sampler", "gidd_ancestral", "--steps", 2,
                  "--num-samples", 1, "--device", "cpu", "--out", out)
    assert rc == 2 and f"{real_ckpt}: sampler 'gidd_ancestral' applies to ['gidd'], not to a 'mdlm' model" in err
    assert out.read_text() == OLD


def test_unknown_sampler_or_algo_lists_the_known_ones(real_ckpt, packed, tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    rc, err = cli(capsys, "sample", "--ckpt", real_ckpt, "--sampler", "remdm_lop", "--out", out)
    assert rc == 2 and "unknown sampler 'remdm_lop'; expected one of [" in err and "'remdm_loop'" in err
    assert not out.exists()
    module = load_module(str(real_ckpt))
    with pytest.raises(ValueError, match=r"unknown sampler 'nonesuch'; expected one of \[.*'mdlm_ancestral'"):
        run_sampler(module, "nonesuch", 1, 2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"unknown algo 'mdlmm'; expected one of \[.*'mdlm'.*'udlm'\]"):
        get_method("mdlmm")
    ckpt = torch.load(real_ckpt, weights_only=True)
    ckpt["hyper_parameters"]["method"]["algo"] = "plaid"
    torch.save(ckpt, tmp_path / "plaid.ckpt")
    with pytest.raises(ValueError) as e:
        load_module(str(tmp_path / "plaid.ckpt"))
    assert f"{tmp_path / 'plaid.ckpt'}: unknown algo 'plaid'; expected one of [" in str(e.value)
    assert "'duo'" in str(e.value)


# ------------------------------------------------------------------------------- 11: sequence length
def test_sequence_length_the_model_cannot_take_names_both_lengths(packed, tmp_path):
    ckpt = save_method(tmp_path / "l16.ckpt", packed, block_length=16)  # trained at 16, data packed at 32
    out = old_result(tmp_path / "val.json")
    with pytest.raises(ValueError) as e:
        evaluate_ppl(str(ckpt), str(packed), "valid", 8, 1, str(out), device="cpu")
    msg = str(e.value)
    assert f"packed data {packed} has block_length 32" in msg
    assert f"checkpoint {ckpt} takes sequences of length 16" in msg
    assert out.read_text() == OLD
    module = load_module(str(ckpt))
    with pytest.raises(ValueError, match=r"conditioning has shape \(2, 32\), expected \(2, 16\)"):
        run_sampler(module, "mdlm_ancestral", 2, 2, torch.Generator().manual_seed(0), cond=Conditioning.none(2, 32))


# ------------------------------------------------------------------------------------ 12: steps < 1
@pytest.mark.parametrize("steps", [0, -3])
def test_steps_below_one_names_the_value(real_ckpt, tmp_path, capsys, steps):
    model = Model.load(str(real_ckpt), device="cpu")
    with pytest.raises(ValueError, match=rf"^steps = {steps} is invalid: expected an integer >= 1$"):
        model.generate(1, steps=steps)
    out = old_result(tmp_path / "s.jsonl")
    rc, err = cli(capsys, "sample", "--ckpt", tmp_path / "not-read.ckpt", "--sampler", "mdlm_ancestral", "--steps",
                  steps, "--out", out)  # refused before the checkpoint is even read
    assert rc == 2 and f"steps = {steps} is invalid: expected an integer >= 1" in err and out.read_text() == OLD


# ----------------------------------------------------------------- 13: prompt longer than the block
def test_prompt_longer_than_the_block_names_the_lengths(real_ckpt, packed, tmp_path, capsys):
    model = Model.load(str(real_ckpt), device="cpu")
    with pytest.raises(ValueError) as e:
        model.generate(1, steps=2, prefix=list(range(2, 42)))
    assert "prompt 0 (prefix of 40 tokens) fixes 40 positions but the block holds 32" in str(e.value)
    prompts = tmp_path / "prompts.jsonl"
    long = " ".join(["And God said, Let there be light: and there was light."] * 8)
    prompts.write_text(json.dumps({"prefix": "In the beginning"}) + "\n" + json.dumps({"prefix": long}) + "\n")
    n_long = len(model.encode(long))
    out = old_result(tmp_path / "s.jsonl")
    rc, err = cli(capsys, "sample", "--ckpt", real_ckpt, "--sampler", "mdlm_ancestral", "--steps", 2,
                  "--num-samples", 3, "--condition", "prefix", "--prompts", prompts, "--device", "cpu", "--out", out)
    assert rc == 2
    assert f"{prompts}: prompt 1 (prefix of {n_long} tokens) fixes {n_long} positions but the block holds 32" in err
    assert out.read_text() == OLD
    rc, err = cli(capsys, "sample", "--ckpt", real_ckpt, "--sampler", "mdlm_ancestral", "--steps", 2,
                  "--num-samples", 2, "--condition", "prefix", "--data", packed, "--prefix-tokens", 40,
                  "--device", "cpu", "--out", out)
    assert rc == 2 and "prefix_tokens 40 leave nothing to generate in a block of 32" in err
    assert out.read_text() == OLD
