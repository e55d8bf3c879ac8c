"""Judges: any Hugging Face causal LM scores the samples (here a Llama-architecture model, the family of the GIDD
paper's larger judges), in the scorer and through the workflow's gen-PPL rule, by the papers' convention."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlm.data.tokenizer import write_offline_gpt2
from dlm.evaluation.gen_ppl import generative_perplexity
from dlm.evaluation.judge import HFJudge, load_judge

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("judge") / "llama-tiny"
    write_offline_gpt2(str(d))  # GPT-2 BPE files (offline); the architecture is Llama's
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=24,
                      bos_token_id=50256, eos_token_id=50256)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def test_llama_judge_matches_a_hand_computation(llama_dir):
    judge = load_judge(str(llama_dir))
    assert isinstance(judge, HFJudge) and judge.max_length == 24  # from max_position_embeddings
    texts = ["In the beginning was the Word.", "A"]
    res = generative_perplexity(texts, judge, batch_size=2)
    # by hand: no special tokens added, the first token is context only; "A" is one token, so its only
    # counted target is the first padding EOS (the papers' rule: the count is not ANDed with the mask)
    ids = judge.tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    a = judge.tokenizer("A", add_special_tokens=False)["input_ids"] + [50256] * (len(ids) - 1)
    tot, n = 0.0, 0
    for row, mask in ((ids, [1] * len(ids)), (a, [1] + [0] * (len(ids) - 1))):
        with torch.no_grad():
            logits = judge.model(torch.tensor([row]), attention_mask=torch.tensor([mask])).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        seen = False
        for j in range(1, len(row)):
            if row[j] == 50256:
                if seen:
                    continue
                seen = True
            tot -= float(logp[j - 1, row[j]])
            n += 1
    assert res["num_tokens"] == n == len(ids) - 1 + 1
    assert res["gen_ppl"] == pytest.approx(float(torch.tensor(tot / n).exp()), rel=1e-5)


@pytest.mark.e2e
def test_workflow_scores_held_out_text_with_an_hf_judge(llama_dir, tmp_path):
    """`evaluation.judge` set to a Hugging Face model directory: the gen-PPL rule loads it (no pipeline judge is
    trained) and records its name; the held-out reference row is scored by the same judge."""
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(json.dumps({"evaluation": {"judge": str(llama_dir)}}))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--profile", str(ROOT / "profiles" / "smoke"),
           "--configfile", str(ROOT / "config" / "smoke.yaml"), str(cfg), "--directory", str(tmp_path / "work"),
           "results/eval/reference/gen_heldout.json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads((tmp_path / "work" / "results" / "eval" / "reference" / "gen_heldout.json").read_text())
    assert out["judge"] == str(llama_dir) and out["max_length"] == 24 and out["count_padding_eos"] is True
    assert 1 < out["gen_ppl"] < 1e6 and out["num_tokens"] > 0
    assert not (tmp_path / "work" / "results" / "models").exists()  # no pipeline judge was trained
