"""The `dlm` command line: help texts, the integral and gen-ppl commands, and clear errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from dlm.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("integral", "gen-ppl", "train", "sample", "val-ppl"):
        assert cmd in out


def test_integral_command(tmp_path):
    out = tmp_path / "k.npz"
    assert main(["integral", "--vocab-size", "30522", "--gamma-min", "-4", "--gamma-max", "-1", "--points", "13",
                 "--out", str(out)]) == 0
    z = np.load(out)
    assert {"gamma", "alpha", "dalpha_dgamma"} <= set(z.files)
    assert z["alpha"].dtype == np.float64 and len(z["gamma"]) == 13
    # known values (DUO reference cache, K = 30522): alpha(-4) = 0.999063, alpha(-1) = 0.008490
    assert z["alpha"][0] == pytest.approx(0.999063, abs=2e-5)
    assert z["alpha"][-1] == pytest.approx(0.008490, abs=2e-5)


def test_integral_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["integral", "--vocab-size", "1", "--out", str(tmp_path / "x.npz")]) == 2
    assert "vocab_size" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_gen_ppl_command_with_an_offline_hf_model(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import GPT2Config, GPT2LMHeadModel

    from dlm.data.tokenizer import write_offline_gpt2

    judge = tmp_path / "tiny-gpt2"
    write_offline_gpt2(str(judge))
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64)).save_pretrained(judge)
    texts = tmp_path / "texts.jsonl"
    texts.write_text("\n".join(json.dumps(t) for t in ["In the beginning", "God created the heaven"]) + "\n")
    out = tmp_path / "gen.json"
    res = subprocess.run([sys.executable, "-m", "dlm.cli", "gen-ppl", "--texts", str(texts), "--judge", str(judge),
                          "--max-length", "16", "--batch-size", "2", "--out", str(out)],
                         capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert res.returncode == 0, res.stderr
    r = json.loads(out.read_text())
    # GPT-2 BPE: 3 + 4 tokens, the first is context; the shorter row's first padding EOS counts (papers' rule)
    assert r["gen_ppl"] > 1 and r["num_tokens"] == (3 - 1) + 1 + (4 - 1) and r["count_padding_eos"] is True
    assert r["max_length"] == 16 and "provenance" in r
