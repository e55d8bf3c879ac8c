"""Conditioning from prompts (held-out blocks, a prompts file, the API's prefix / suffix / spans) and the
`dlm sample --set` parser."""

import json

import pytest
import torch

from conftest import make_module
from dlm.api import Model
from dlm.data.tokenizer import load_tokenizer
from dlm.sample import build_conditioning, file_conditioning, heldout_conditioning


@pytest.fixture(scope="module")
def model(packed):
    tok = load_tokenizer(str(packed.parent / "tok"))
    return Model(make_module("mdlm", vocab_size=len(tok) + 1, block_length=32).eval(), tok)


def test_heldout_prompts_are_the_validation_blocks(packed):
    from dlm.data.dataset import PackedDataset

    ds = PackedDataset(str(packed), "valid")
    c = heldout_conditioning(str(packed), 5, 32, "infill", 8, 4)
    for i in range(5):
        assert torch.equal(c.values[i], ds[i % len(ds)]["input_ids"])
    assert c.fixed[:, :8].all() and c.fixed[:, -4:].all() and not c.fixed[:, 8:-4].any()
    assert heldout_conditioning(str(packed), 2, 32, "prefix", 8, 4).fixed.sum(1).tolist() == [8, 8]
    with pytest.raises(ValueError, match="leave nothing to generate"):
        heldout_conditioning(str(packed), 2, 32, "infill", 20, 12)


def test_prompts_file_prefix_and_suffix(model, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prefix": "And God said", "suffix": "and it was so."}) + "\nIn the beginning\n")
    c = file_conditioning(model, str(f), 3, "prefix")
    ids = model.encode("And God said")
    assert c.values[0, :len(ids)].tolist() == ids and c.fixed[0].sum() == len(ids)
    assert c.values[1, :c.fixed[1].sum()].tolist() == model.encode("In the beginning")
    assert torch.equal(c.values[2], c.values[0])  # cycled
    with pytest.raises(ValueError, match="has no suffix"):
        file_conditioning(model, str(f), 2, "infill")  # the plain-text line has no suffix
    c = file_conditioning(model, str(f), 1, "infill")
    suf = model.encode(" and it was so.")  # a suffix continues the text: a new word keeps its space
    assert c.values[0, -len(suf):].tolist() == suf and c.fixed[0, -len(suf):].all()
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        file_conditioning(model, str(tmp_path / "empty.txt"), 1, "prefix")
    with pytest.raises(ValueError, match="unknown condition"):
        build_conditioning(model, "middle", 1, None, None)
    with pytest.raises(ValueError, match="prompts.path is not set"):
        build_conditioning(model, "prefix", 1, {"source": "file"}, None)


def test_api_generate_keeps_prefix_suffix_and_spans(model):
    out = model.generate(3, steps=8, seed=0, prefix="And God said", suffix=[1, 2, 3], spans={12: "light"})
    pre, span = model.encode("And God said"), model.encode(" light")
    for row in out.tokens.tolist():
        assert row[:len(pre)] == pre and row[-3:] == [1, 2, 3] and row[12:12 + len(span)] == span
    again = model.generate(3, steps=8, seed=0, prefix="And God said", suffix=[1, 2, 3], spans={12: "light"})
    assert torch.equal(out.tokens, again.tokens) and out.nfe >= 1 and len(out.texts) == 3
    with pytest.raises(ValueError, match="unknown setting"):
        model.generate(1, steps=4, bogus=1)
    with pytest.raises(ValueError, match="nothing left to generate"):
        model.generate(1, steps=4, prefix=list(range(2, 34)))
    sc = model.self_correct(out.tokens, seed=0, steps=4)
    assert sc.tokens.shape == out.tokens.shape and "sc_final_acc" in sc.extra


def test_suffix_and_spans_join_the_generated_text_as_one_decoded_text(model):
    """A suffix or span after generated text was encoded as if it began the text, so its first word was glued to
    the word before ("lawand it was good"); it now carries the space the byte-level tokenizer keeps in the word's
    token, as the tokenizer's encoding of the whole text would, and the decoded sample shows it."""
    tok = model.tokenizer
    out = model.generate(2, steps=4, seed=0, prefix="In the beginning", suffix="and it was good.",
                         spans={10: "light"})
    for text, row in zip(out.texts, out.tokens.tolist()):
        assert text == tok.decode(row) and text.endswith(" and it was good.")
        assert " light" in text
    assert model.encode(" and it was good.") != model.encode("and it was good.")  # the space is in the tokens
    # punctuation (or an explicit space) joins as written; token ids are taken as given
    c = model.conditioning(1, suffix=", and it was good.")
    assert tok.decode(c.values[0][c.fixed[0]].tolist()) == ", and it was good."
    c = model.conditioning(1, suffix=[1, 2, 3], spans={0: "And"})
    assert c.values[0, :len(model.encode("And"))].tolist() == model.encode("And")  # position 0: nothing before it


def test_cli_settings_are_yaml_values():
    from dlm.cli import parse_settings

    assert parse_settings(["eta=0.02", "modes=[pure-pc, constant]", "self_correct=true"]) == {
        "eta": 0.02, "modes": ["pure-pc", "constant"], "self_correct": True}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_settings(["eta"])


def test_heldout_reference_text(packed, tmp_path):
    """The reference row of gen-PPL tables: held-out blocks evenly spaced over the valid split, decoded, in
    the samples-file format (so the gen_ppl script scores it like any sample file)."""
    from dlm.data.dataset import PackedDataset
    from dlm.sample import sample_summary, write_heldout

    ds = PackedDataset(str(packed), "valid")
    out = tmp_path / "heldout.jsonl"
    write_heldout(str(packed), str(packed.parent / "tok"), 3, str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    tok = load_tokenizer(str(packed.parent / "tok"))
    assert [r["block"] for r in rows] == [0, len(ds) // 3, 2 * len(ds) // 3]
    for r in rows:
        assert r["tokens"] == ds[r["block"]]["input_ids"].tolist() and r["text"] == tok.decode(r["tokens"])
        assert (r["run"], r["algo"], r["sampler"], r["steps"]) == ("reference", "data", "heldout", 0)
    summary = sample_summary(str(out))
    assert summary["algo"] == "data" and summary["length"] == ds[0]["input_ids"].numel()
    write_heldout(str(packed), str(packed.parent / "tok"), len(ds) + 2, str(out))  # more rows than blocks: cycles
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["block"] for r in rows][-2:] == [0, 1]
