"""Zero-shot perplexity: the evaluation corpora (offline kinds and the paper kinds on local files), their
packing (EOS between documents or not, non-empty and of recorded size), the evaluation through the
validation bound's code path, and the zero-shot table."""

from __future__ import annotations

import json
import re
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlm.data.eval_corpora import (eval_documents, module_docstrings, pack_eval_corpus, stdlib_docstring_docs,
                                   write_eval_corpus)
from dlm.data.tokenizer import load_tokenizer, special_ids


def read_docs(path) -> list[str]:
    return [json.loads(line)["text"] for line in Path(path).read_text().splitlines()]


def write_lines(path: Path, objs) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


# ------------------------------------------------------------------------------------------ corpora
def test_pydoc_topics_in_sorted_key_order_with_max_docs(tmp_path):
    from pydoc_data.topics import topics

    meta = write_eval_corpus("pydoc", {"kind": "pydoc_topics", "max_docs": 5}, tmp_path / "v.jsonl", tmp_path / "m.json")
    assert read_docs(tmp_path / "v.jsonl") == [topics[k] for k in sorted(topics)[:5]]
    assert meta["n_docs"] == 5 and meta["python"].count(".") == 2
    assert json.loads((tmp_path / "m.json").read_text())["sha256"] == meta["sha256"]


def test_text_files_one_document_per_file_in_listed_order(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("First file.\n\nSecond paragraph.\n")
    b.write_text("Other file.\n")
    meta = write_eval_corpus("lic", {"kind": "text_files", "files": [str(b), str(a)]}, tmp_path / "v.jsonl",
                             tmp_path / "m.json")
    assert read_docs(tmp_path / "v.jsonl") == ["Other file.\n", "First file.\n\nSecond paragraph.\n"]
    assert set(meta["source_files"]) == {str(a), str(b)}


def test_text_files_missing_file_names_the_corpus_and_path(tmp_path):
    missing = tmp_path / "nope" / "GPL-3"
    with pytest.raises(FileNotFoundError, match=r"zero-shot corpus 'licenses': file .*nope/GPL-3 not found"):
        write_eval_corpus("licenses", {"kind": "text_files", "files": [str(missing)]}, tmp_path / "v.jsonl",
                          tmp_path / "m.json")
    assert not (tmp_path / "v.jsonl").exists()


def test_text_files_invalid_utf8_names_the_file(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt: invalid UTF-8 at byte offset 3"):
        write_eval_corpus("x", {"kind": "text_files", "files": [str(bad)]}, tmp_path / "v.jsonl", tmp_path / "m.json")


def test_debian_license_texts_of_the_default_config_are_read_when_present(tmp_path):
    import yaml

    root = Path(__file__).resolve().parents[1]
    src = yaml.safe_load((root / "config" / "config.yaml").read_text())["zero_shot"]["corpora"]["licenses"]
    if not all(Path(f).is_file() for f in src["files"]):
        pytest.skip("Debian's /usr/share/common-licenses is not installed here")
    meta = write_eval_corpus("licenses", src, tmp_path / "v.jsonl", tmp_path / "m.json")
    docs = read_docs(tmp_path / "v.jsonl")
    assert meta["n_docs"] == len(src["files"]) and "GNU GENERAL PUBLIC LICENSE" in docs[src["files"].index(
        "/usr/share/common-licenses/GPL-3")]


def test_module_docstrings_in_source_order_depth_first():
    source = '''"""Module doc."""
import os

def f():
    """F doc."""
    def inner():
        """Inner doc."""

class C:
    """C doc."""
    def m(self):
        """M doc."""
    x = 1

async def g():
    """G doc."""
'''
    assert module_docstrings(source) == ["Module doc.", "F doc.", "Inner doc.", "C doc.", "M doc.", "G doc."]


def test_stdlib_docstrings_parse_without_importing_and_skip_modules_without_any(tmp_path):
    (tmp_path / "b_mod.py").write_text('"""B."""\nraise SystemExit("imported!")\n')
    (tmp_path / "a_mod.py").write_text('"""A."""\ndef f():\n    """Fa."""\n')
    (tmp_path / "c_mod.py").write_text("x = 1\n")
    (tmp_path / "_private.py").write_text('"""Private."""\n')
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text('"""Not top level."""\n')
    assert list(stdlib_docstring_docs(tmp_path)) == ["A.\n\nFa.", "B."]
    docs = list(eval_documents("d", {"kind": "stdlib_docstrings", "root": str(tmp_path), "max_docs": 1}))
    assert docs == ["A.\n\nFa."]


def test_stdlib_docstrings_of_this_python_are_real_prose():
    docs = list(eval_documents("docstrings", {"kind": "stdlib_docstrings", "max_docs": 3}))
    assert len(docs) == 3 and all(len(d) > 100 for d in docs)
    assert docs == list(eval_documents("docstrings", {"kind": "stdlib_docstrings", "max_docs": 3}))  # deterministic


def test_jsonl_lambada_style_with_its_detokenizer(tmp_path):
    src = write_lines(tmp_path / "lambada_test.jsonl", [
        {"text": "\u201cWhere are you going?\u201d she asked.\nHe didn\u2019t answer "},
        {"text": "  plain passage"}])
    docs = list(eval_documents("lambada", {"kind": "jsonl", "path": str(src), "detokenizer": "lambada"}))
    assert docs == ['\n"Where are you going?" she asked.\nHe didn\u2019t answer', "\nplain passage"]


def test_jsonl_without_the_text_field_names_the_line(tmp_path):
    src = write_lines(tmp_path / "x.jsonl", [{"text": "ok"}, {"body": "no"}])
    with pytest.raises(ValueError, match=r"x.jsonl line 2 has no key 'text'"):
        list(eval_documents("lambada", {"kind": "jsonl", "path": str(src)}))


def test_hf_kind_reads_split_field_and_detokenizer_and_keeps_blank_rows(tmp_path):
    """The paper corpora's loading code on a local dataset in PTB's raw style (field `sentence`)."""
    data = write_lines(tmp_path / "ptb.jsonl", [
        {"sentence": "the company 's shares rose $ N million", "label": 0},
        {"sentence": "", "label": 1},
        {"sentence": "they do n't know <unk> \\/ N", "label": 2}])
    src = {"kind": "hf", "path": "json", "data_files": {"validation": str(data)}, "split": "validation",
           "text_field": "sentence", "detokenizer": "ptb", "cache_dir": str(tmp_path / "cache")}
    meta = write_eval_corpus("ptb", src, tmp_path / "v.jsonl", tmp_path / "m.json")
    assert read_docs(tmp_path / "v.jsonl") == ["the company's shares rose $1 million", "", "they don't know ? / N"]
    assert meta["n_docs"] == 3 and meta["n_blank_docs"] == 1
    with pytest.raises(ValueError, match=r"zero-shot corpus 'ptb'.*no column 'text'"):
        list(eval_documents("ptb", {**src, "text_field": "text"}))


def test_blank_only_or_unknown_sources_fail_naming_the_corpus(tmp_path):
    src = write_lines(tmp_path / "x.jsonl", [{"text": " "}, {"text": ""}])
    with pytest.raises(ValueError, match="zero-shot corpus 'x' .*only blank documents"):
        write_eval_corpus("x", {"kind": "jsonl", "path": str(src)}, tmp_path / "v.jsonl", tmp_path / "m.json")
    assert not (tmp_path / "v.jsonl").exists()
    with pytest.raises(ValueError, match="zero-shot corpus 'y': unknown source kind 'web'"):
        list(eval_documents("y", {"kind": "web"}))
    with pytest.raises(ValueError, match="max_docs must be null or an integer >= 1"):
        list(eval_documents("y", {"kind": "pydoc_topics", "max_docs": 0}))


# ------------------------------------------------------------------------------------------ packing
@pytest.fixture(scope="module")
def tok_dir(packed):
    return str(Path(packed).parent / "tok")  # conftest's 300-token BPE trained on KJV


def test_pack_records_its_size_and_eos_between_documents_is_a_setting(tok_dir, tmp_path):
    docs = [f"Document number {i} of the zero-shot corpus, with some words." for i in range(40)]
    jsonl = write_lines(tmp_path / "v.jsonl", [{"text": d} for d in docs])
    tok = load_tokenizer(tok_dir)
    n_text = sum(len(e) for e in tok(docs, add_special_tokens=False)["input_ids"])
    eos = special_ids(tok)["eos"]
    with_eos = pack_eval_corpus("c", str(jsonl), tok_dir, "wrap", 32, str(tmp_path / "a"), insert_eos=True)
    without = pack_eval_corpus("c", str(jsonl), tok_dir, "wrap", 32, str(tmp_path / "b"), insert_eos=False)
    a, b = with_eos["splits"]["valid"], without["splits"]["valid"]
    assert a["n_stream_tokens"] == n_text + len(docs) and b["n_stream_tokens"] == n_text
    assert (a["insert_eos"], b["insert_eos"]) == (True, False)
    for stats, d in ((a, "a"), (b, "b")):
        arr = np.load(tmp_path / d / "valid.npy")
        assert arr.shape == (stats["n_blocks"], 32) and stats["n_blocks"] == stats["n_stream_tokens"] // 30
        assert stats["n_dropped_tokens"] == stats["n_stream_tokens"] % 30
        assert json.loads((tmp_path / d / "meta.json").read_text())["splits"]["valid"]["n_blocks"] == arr.shape[0]
    inner_b = np.load(tmp_path / "b" / "valid.npy")[:, 1:-1]
    assert (inner_b != eos).all()  # no EOS between documents, only each block's BOS ... EOS
    assert (np.load(tmp_path / "a" / "valid.npy")[:, 1:-1] == eos).sum() > 0


def test_many_short_documents_do_not_vanish(tok_dir, tmp_path):
    """DUO's PTB vanished at block 1024: the original chunks each map batch of 1000 documents (and each worker
    shard) on its own and drops every remainder. 3000 documents whose 1000-document batches are each shorter
    than one block still give blocks here, because the whole split is concatenated before chunking."""
    jsonl = write_lines(tmp_path / "v.jsonl", [{"text": "a b"} for _ in range(3000)])
    tok = load_tokenizer(tok_dir)
    per_doc = len(tok(["a b"], add_special_tokens=False)["input_ids"][0])
    block = 1000 * per_doc + 200  # one original map batch (without EOS) is shorter than a block
    meta = pack_eval_corpus("ptb", str(jsonl), tok_dir, "wrap", block, str(tmp_path / "p"), insert_eos=False)
    assert meta["splits"]["valid"]["n_blocks"] == 3000 * per_doc // (block - 2) >= 1


def test_a_corpus_empty_after_packing_fails_naming_it(tok_dir, tmp_path):
    jsonl = write_lines(tmp_path / "v.jsonl", [{"text": "In the beginning."}])
    with pytest.raises(ValueError, match=r"zero-shot corpus 'ptb' is empty after packing \(wrap, block_length 1024\)"):
        pack_eval_corpus("ptb", str(jsonl), tok_dir, "wrap", 1024, str(tmp_path / "p"))
    assert not (tmp_path / "p" / "meta.json").exists()
    many = write_lines(tmp_path / "w.jsonl", [{"text": "In the beginning God created the heaven."}] * 20)
    with pytest.raises(ValueError, match=r"zero-shot corpus 'lm1b' has \d+ blocks .* min_blocks = 1000"):
        pack_eval_corpus("lm1b", str(many), tok_dir, "wrap", 16, str(tmp_path / "q"), min_blocks=1000)
    assert not (tmp_path / "q" / "meta.json").exists()


def test_pad_packing_like_lm1b_training_data(tok_dir, tmp_path):
    jsonl = write_lines(tmp_path / "v.jsonl", [{"text": "One sentence ."}, {"text": "Another , longer sentence ."}])
    meta = pack_eval_corpus("c", str(jsonl), tok_dir, "pad", 16, str(tmp_path / "p"))
    assert meta["splits"]["valid"]["n_blocks"] == 2 and (tmp_path / "p" / "valid_mask.npy").exists()


# --------------------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def mdlm_ckpt(real_ckpt):
    """conftest's untrained MDLM checkpoint (K = 300, L = 32), as a path string."""
    return str(real_ckpt)


def test_zero_shot_is_the_validation_bound_on_other_data(mdlm_ckpt, packed, tok_dir, tmp_path):
    """Scoring the training corpus's own packed valid split as a 'zero-shot corpus' gives exactly the val-PPL
    rule's numbers (one code path, the same seeded draws); every setting and the packed size are recorded."""
    from dlm.evaluation.val_ppl import evaluate_ppl
    from dlm.evaluation.zero_shot import evaluate_zero_shot

    jsonl = write_lines(tmp_path / "v.jsonl", [{"text": t} for t in
                                               eval_documents("pydoc", {"kind": "pydoc_topics", "max_docs": 4})])
    pydoc = tmp_path / "pydoc_packed"
    pack_eval_corpus("pydoc", str(jsonl), tok_dir, "wrap", 32, str(pydoc))
    out = tmp_path / "zs.json"
    res = evaluate_zero_shot(mdlm_ckpt, {"kjv": str(packed), "pydoc": str(pydoc)}, 8, 3, str(out), run="mdlm",
                             max_batches=2, passes=2, device="cpu")
    val = evaluate_ppl(mdlm_ckpt, str(packed), "valid", 8, 3, str(tmp_path / "val.json"), max_batches=2, passes=2,
                       device="cpu")
    assert res["corpora"]["kjv"]["pass_nll"] == val["pass_nll"] and res["corpora"]["kjv"]["ppl"] == val["val_ppl"]
    pd_ = res["corpora"]["pydoc"]
    assert math.isclose(pd_["ppl"], math.exp(pd_["nll"])) and pd_["ppl_se"] > 0 and len(pd_["pass_nll"]) == 2
    assert pd_["blocks_evaluated"] == min(16, pd_["blocks"]) and pd_["packed"]["n_blocks"] == pd_["blocks"]
    assert pd_["num_tokens"] == pd_["blocks_evaluated"] * 32
    saved = json.loads(out.read_text())
    assert saved["settings"] == {"ckpt": mdlm_ckpt, "corpora": {"kjv": str(packed), "pydoc": str(pydoc)},
                                 "split": "valid", "batch_size": 8, "seed": 3, "max_batches": 2, "passes": 2}
    assert {"config_hash", "git_commit", "packages"} <= set(saved["provenance"])


def test_zero_shot_rejects_data_of_another_tokenizer(mdlm_ckpt, tmp_path):
    from dlm.data.tokenizer import train_bpe
    from dlm.evaluation.zero_shot import evaluate_zero_shot

    jsonl = write_lines(tmp_path / "v.jsonl", [{"text": t} for t in
                                               eval_documents("pydoc", {"kind": "pydoc_topics", "max_docs": 3})])
    train_bpe(str(jsonl), 280, str(tmp_path / "tok"))
    pack_eval_corpus("pydoc", str(jsonl), str(tmp_path / "tok"), "wrap", 32, str(tmp_path / "p"))
    with pytest.raises(ValueError, match="has vocab_size 280 but the checkpoint"):
        evaluate_zero_shot(mdlm_ckpt, {"pydoc": str(tmp_path / "p")}, 8, 1, str(tmp_path / "o.json"), device="cpu")


# -------------------------------------------------------------------------------------------- table
def _jsons(tmp_path, rows):
    zs, val = [], []
    for run, algo, own, corpora in rows:
        (tmp_path / run).mkdir()
        z = tmp_path / run / "zero_shot.json"
        z.write_text(json.dumps({"run": run, "algo": algo, "corpora": {
            c: {"ppl": p, "ppl_se": se} for c, (p, se) in corpora.items()}}))
        v = tmp_path / run / "val_ppl.json"
        v.write_text(json.dumps({"run": run, "algo": algo, "val_ppl": own[0], "val_ppl_se": own[1]}))
        zs.append(z)
        val.append(v)
    return zs, val


def test_table_rows_runs_columns_corpora_with_standard_errors(tmp_path):
    from dlm.report.zero_shot_table import in_domain_lowest, zero_shot_table

    zs, val = _jsons(tmp_path, [
        ("mdlm", "mdlm", (20.0, 0.5), {"ptb": (95.0, 1.0), "wikitext": (33.0, 0.4)}),
        ("ar", "ar", (15.0, 0.0), {"ptb": (82.0, 0.0), "wikitext": (10.0, 0.0)})])
    paper = tmp_path / "paper.yaml"
    paper.write_text("tolerance: {zero_shot_ppl: {relative: 0.1}}\nvalues:\n"
                     "  - {dataset: owt, table: zero_shot, run: mdlm, corpus: ptb, metric: zero_shot_ppl, value: 95.26,"
                     " source: DUO Table 2}\n"
                     "  - {dataset: lm1b, table: zero_shot, run: ar, corpus: ptb, metric: zero_shot_ppl, value: 1.0,"
                     " source: other}\n")
    df = zero_shot_table(zs, val, tmp_path / "zero_shot", in_domain="owt", paper_values_path=str(paper), dataset="owt")
    assert list(df.columns) == ["source", "run", "algo", "owt", "owt_se", "ptb", "ptb_se", "wikitext", "wikitext_se",
                                "tolerance"]
    assert list(df["run"]) == ["ar", "mdlm", "mdlm"] and list(df["source"]) == ["ours", "ours", "DUO Table 2"]
    assert list(df["tolerance"].fillna("")) == ["", "within ±10%", ""]  # 95.0 vs the paper's 95.26
    paper.write_text(paper.read_text().replace("value: 95.26", "value: 50.0"))
    flagged = zero_shot_table(zs, val, tmp_path / "flagged", in_domain="owt", paper_values_path=str(paper), dataset="owt")
    assert flagged.loc[1, "tolerance"] == "outside ±10%: ptb"
    paper.write_text(paper.read_text().replace("value: 50.0", "value: 95.26"))
    assert df.iloc[2]["ptb"] == 95.26 and np.isnan(df.iloc[2]["wikitext"])
    csv = pd.read_csv(tmp_path / "zero_shot.csv")
    assert csv.loc[1, "ptb_se"] == 1.0
    md = (tmp_path / "zero_shot.md").read_text()
    assert "owt (held-out)" in md and "95.00 ± 1.00" in md and "**82.00 ± 0.00**" in md and "**95.26" not in md
    tex = (tmp_path / "zero_shot.tex").read_text()
    assert "\\toprule" in tex and "$\\pm$" in tex
    assert list(in_domain_lowest(df.iloc[:2], "owt", ["owt", "ptb", "wikitext"])) == [False, True]  # ar: 10 < 15


def test_table_refuses_json_with_other_corpora(tmp_path):
    from dlm.report.zero_shot_table import zero_shot_table

    zs, val = _jsons(tmp_path, [("a", "ar", (1.0, 0.0), {"ptb": (2.0, 0.0)}),
                                ("b", "mdlm", (1.0, 0.1), {"lm1b": (2.0, 0.1)})])
    with pytest.raises(ValueError, match=r"corpora \['lm1b'\] differ"):
        zero_shot_table(zs, val, tmp_path / "t", in_domain="kjv")
    with pytest.raises(ValueError, match="no val-PPL JSON of run 'a'"):
        zero_shot_table(zs[:1], [], tmp_path / "t", in_domain="kjv")


# ------------------------------------------------------------------------------------------- config
def test_config_keys_are_validated_and_documented():
    import yaml

    from dlm.config import ConfigError, apply_defaults, check_config

    root = Path(__file__).resolve().parents[1]
    schema = root / "config" / "schema.yaml"
    for name in ("config/config.yaml", "config/smoke.yaml", "config/paper/owt.yaml"):
        cfg = yaml.safe_load((root / name).read_text())
        check_config(cfg, str(schema))
        apply_defaults(cfg, str(schema))
        assert cfg["zero_shot"]["corpora"] and cfg["zero_shot"]["min_blocks"] == 1
    owt = yaml.safe_load((root / "config/paper/owt.yaml").read_text())["zero_shot"]["corpora"]
    assert list(owt) == ["ptb", "wikitext", "lm1b", "lambada", "ag_news", "pubmed", "arxiv"]
    assert {k: (v.get("split"), v.get("text_field"), v.get("detokenizer")) for k, v in owt.items()} == {
        "ptb": ("validation", "sentence", "ptb"), "wikitext": ("validation", "text", "wikitext"),
        "lm1b": ("test", "text", "lm1b"), "lambada": (None, "text", "lambada"), "ag_news": ("test", "text", None),
        "pubmed": ("validation", "article", "scientific_papers"),
        "arxiv": ("validation", "article", "scientific_papers")}
    bad = yaml.safe_load((root / "config" / "smoke.yaml").read_text())
    bad["zero_shot"]["corpora"]["pydoc"]["detokeniser"] = "ptb"
    with pytest.raises(ConfigError, match=r"zero_shot.corpora.pydoc.detokeniser': unknown key.*did you mean 'detokenizer'"):
        check_config(bad, str(schema))
    described = yaml.safe_load(schema.read_text())["properties"]["zero_shot"]["properties"]
    assert all("description" in v for v in described.values())


def test_zero_shot_eos_follows_each_runs_original_code():
    """Per run, not one switch: the original DUO zero-shot scripts pack without EOS between documents
    (data.insert_valid_eos=False) for UDLM / DUO (and DCD, a distilled DUO); MDLM's code, which produced the AR /
    SEDD / MDLM rows, appends one. true / false is one setting for all; insert_eos_by_run overrides single runs
    (by run or by the config entry of a training seed)."""
    import yaml

    from dlm.config import ConfigError, check_config, expand_seeds, zero_shot_insert_eos

    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / "config" / "config.yaml").read_text())
    group = expand_seeds(cfg)
    eos = {r: zero_shot_insert_eos(cfg, r, group[r]) for r in cfg["runs"]}
    no_eos = {r for r in cfg["runs"] if cfg["runs"][r]["algo"] in ("udlm", "duo", "dcd")}
    assert {"udlm", "duo", "duo_s2", "duo_pp", "duo_dcd"} <= no_eos  # the default's DUO family, seeds included
    assert {r for r, e in eos.items() if not e} == no_eos
    assert eos["ar"] and eos["mdlm"] and eos["sedd"] and eos["mdlm_sdtt"] and eos["gidd"]
    cfg["zero_shot"]["insert_eos"] = True
    assert all(zero_shot_insert_eos(cfg, r) for r in cfg["runs"])
    cfg["zero_shot"].update(insert_eos=False, insert_eos_by_run={"mdlm": True, "duo": True})
    assert zero_shot_insert_eos(cfg, "mdlm") and zero_shot_insert_eos(cfg, "duo_s2", "duo")
    assert not zero_shot_insert_eos(cfg, "ar")
    bad = yaml.safe_load((root / "config" / "config.yaml").read_text())
    bad["zero_shot"]["insert_eos_by_run"] = {"nope": False}
    with pytest.raises(ConfigError, match=r"zero_shot.insert_eos_by_run.nope': unknown run"):
        check_config(bad, str(root / "config" / "schema.yaml"))


def test_table_shows_each_runs_zero_shot_packing(tmp_path):
    from dlm.report.zero_shot_table import zero_shot_table

    zs, val = _jsons(tmp_path, [("mdlm", "mdlm", (20.0, 0.5), {"ptb": (95.0, 1.0)}),
                                ("duo", "duo", (25.0, 0.5), {"ptb": (90.0, 1.0)})])
    for path, eos in zip(zs, (True, False)):
        path.write_text(json.dumps({**json.loads(path.read_text()), "insert_eos": eos}))
    df = zero_shot_table(zs, val, tmp_path / "t", in_domain="owt")
    assert list(df.columns[:4]) == ["source", "run", "algo", "eos"]
    assert dict(zip(df["run"], df["eos"])) == {"mdlm": "yes", "duo": "no"}
    assert "EOS: whether the corpora were packed" in (tmp_path / "t.tex").read_text()


# ----------------------------------------------------------------------------------------------- DAG
def _dry(tmp_path, *configs):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "-n", "--cores", "2", "--configfile",
           *map(str, configs), "--directory", str(tmp_path)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_dag_scores_every_run_but_the_judge_and_checks_zero_shot_runs(tmp_path):
    import yaml

    from dlm.config import expand_seeds

    root = Path(__file__).resolve().parents[1]
    default = root / "config" / "config.yaml"
    res = _dry(tmp_path, default)
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = yaml.safe_load(default.read_text())
    runs = expand_seeds(cfg)  # every run, the training-seed copies (duo_s2, ...) included
    jobs = {m.group(1) for m in re.finditer(r"results/eval/(\w+)/zero_shot\.json", res.stdout)}
    assert jobs == set(runs) - {"judge"} and "duo_s2" in jobs
    assert "rule table_zero_shot:" in res.stdout and res.stdout.count("rule zero_shot_pack:") == 3
    assert res.stdout.count("rule zero_shot_pack_noeos:") == 3  # udlm / duo / duo_pp / duo_dcd read these
    bad = tmp_path / "bad.yaml"
    bad.write_text("zero_shot: {runs: [mdlm, nope]}\n")
    res = _dry(tmp_path, default, bad)
    assert res.returncode != 0 and "key 'zero_shot.runs': value ['nope'] is invalid" in res.stdout + res.stderr
    smoke = yaml.safe_load((root / "config" / "smoke.yaml").read_text())
    del smoke["zero_shot"]  # no corpora configured: no zero-shot job, no table
    none = tmp_path / "none.yaml"
    none.write_text(yaml.safe_dump(smoke))
    res = _dry(tmp_path, none)
    assert res.returncode == 0 and "zero_shot" not in res.stdout, res.stderr[-2000:]


def test_table_averages_training_seeds(tmp_path):
    from dlm.report.zero_shot_table import zero_shot_table

    rows = [("duo", "duo", (100.0, 1.0), {"ptb": (300.0, 3.0)}), ("duo_s2", "duo", (110.0, 1.0), {"ptb": (340.0, 3.0)}),
            ("ar", "ar", (50.0, 0.0), {"ptb": (200.0, 0.0)})]
    zs, val = _jsons(tmp_path, rows)
    for v in val:  # the val-PPL JSONs name the config entry of each training seed
        obj = json.loads(v.read_text())
        v.write_text(json.dumps({**obj, "group": "duo" if obj["run"].startswith("duo") else obj["run"]}))
    df = zero_shot_table(zs, val, tmp_path / "zs", in_domain="kjv")
    assert list(df["run"]) == ["ar", "duo"] and list(df["n_seeds"]) == [1, 2]
    duo = df.set_index("run").loc["duo"]
    assert duo["ptb"] == 320.0 and duo["ptb_sd"] == pytest.approx(np.std([300, 340], ddof=1)) and duo["kjv"] == 105.0
    assert "320.00 ± 28.28" in (tmp_path / "zs.md").read_text()
