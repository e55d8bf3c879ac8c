"""Downstream accuracy through lm-eval-harness (dlm.evaluation.downstream, dlm.evaluation.downstream_task,
dlm.report.downstream_table): the registered model's log-likelihoods against hand computations, the built
task's format, lm-eval run offline on it, and the table."""

import json
import math
import socket

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import perturb

CONTEXT, CONTINUATION = "And God said", " Let there be light."


@pytest.fixture(scope="module")
def ckpts(packed, tmp_path_factory):
    """Checkpoints (random weights, no EMA) of an AR, a masked and a uniform-state run on the packed KJV data."""
    import lightning as L

    from dlm.train import build_module

    out = {}
    for algo in ("ar", "mdlm", "udlm"):
        module = build_module(str(packed), {"algo": algo, "model": {"size": "nano", "dropout": 0.0},
                                            "trainer": {"max_steps": 1, "ema": 0}})
        perturb(module.method, scale=0.2, seed=len(out))
        trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
        trainer.strategy.connect(module)
        out[algo] = tmp_path_factory.mktemp(algo) / "final.ckpt"
        trainer.save_checkpoint(out[algo])
    return out


def instances(pairs):
    from lm_eval.api.instance import Instance

    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


def test_registered_in_lm_eval():
    from lm_eval.api.model import LM
    from lm_eval.api.registry import get_model

    from dlm.evaluation.downstream import DLMHarness

    assert get_model("dlm") is DLMHarness and issubclass(DLMHarness, LM)


def test_ar_loglikelihood_is_the_exact_mean_nll_of_the_continuation(ckpts):
    """AR (as the original's eval_suffix_nll_ar): ll = -(1/|target|) sum log p(target_i | BOS, context,
    target_<i), target = continuation + EOS; exact (no draw, s.e. 0); is_greedy from the argmax."""
    from dlm.evaluation.downstream import DLMHarness

    lm = DLMHarness(checkpoint=str(ckpts["ar"]), num_mc_samples=7)
    [(ll, greedy)] = lm.loglikelihood(instances([(CONTEXT, CONTINUATION)]))
    m, tok = lm.module, lm.tok
    bos, eos = m.hparams.special_ids["bos"], m.hparams.special_ids["eos"]
    prefix = [bos] + tok.encode(CONTEXT, add_special_tokens=False)
    target = tok.encode(CONTINUATION, add_special_tokens=False) + [eos]
    x = torch.tensor([prefix + target])
    with torch.no_grad():
        logits = m.backbone(x[:, :-1]).double()  # (1, L-1, K): position i predicts token i + 1
    logits[..., m.mask_id] = -math.inf
    logp = F.log_softmax(logits, -1)[0, len(prefix) - 1:]  # the target's predictions
    hand = logp.gather(-1, torch.tensor(target)[:, None]).mean().item()
    assert ll == pytest.approx(hand, abs=1e-5) and ll < 0
    assert greedy == bool((logp.argmax(-1) == torch.tensor(target)).all())
    rec = lm.records[(CONTEXT, CONTINUATION)]
    assert rec["se"] == 0.0 and rec["tokens"] == len(prefix) + len(target) and not rec["overlong"]
    # is_greedy: true for the argmax continuation of the prefix, false once one of its tokens is changed
    from dlm.evaluation.downstream import continuation_loglikelihood

    greedy_target = []
    with torch.no_grad():
        for _ in range(4):
            greedy_target.append(int(m.ar_logits(torch.tensor([prefix + greedy_target]))[0, -1].argmax()))
    assert continuation_loglikelihood(m, prefix, greedy_target, 1, 1, 0)["greedy"] is True
    other = greedy_target[:2] + [(greedy_target[2] + 1) % m.mask_id] + greedy_target[3:]
    assert continuation_loglikelihood(m, prefix, other, 1, 1, 0)["greedy"] is False


@pytest.mark.parametrize("algo", ["mdlm", "udlm"])
def test_diffusion_loglikelihood_is_the_seeded_monte_carlo_bound_of_prompt_and_continuation(ckpts, algo):
    """Diffusion (the original's loss_avg_mode="full"): ll = -mean over draws of the token-mean NELBO of
    BOS + context + continuation + EOS, every position counted; draws of batch i from the generator seeded
    (seed, 0, i) as monte_carlo_bound does, through the method's own per-token loss; s.e. = std / sqrt(n)."""
    from dlm.evaluation.downstream import DLMHarness

    n, b, seed = 12, 4, 3
    lm = DLMHarness(checkpoint=str(ckpts[algo]), num_mc_samples=n, batch_size=b, seed=seed)
    [(ll, greedy)] = lm.loglikelihood(instances([(CONTEXT, CONTINUATION)]))
    m, tok = lm.module, lm.tok
    sid = m.hparams.special_ids
    ids = torch.tensor([sid["bos"]] + tok.encode(CONTEXT, add_special_tokens=False)
                       + tok.encode(CONTINUATION, add_special_tokens=False) + [sid["eos"]])
    per_draw = []
    with torch.no_grad():
        for i in range(n // b):
            g = torch.Generator().manual_seed((seed * 1_000_003 + 0) * 100_003 + i)
            batch = {"input_ids": ids.repeat(b, 1), "attention_mask": torch.ones(b, len(ids), dtype=torch.long)}
            s, count = m.nelbo_terms(batch, g)  # (b,), (b,)
            assert (count == len(ids)).all()
            per_draw += (s / count).tolist()
    assert ll == pytest.approx(-np.mean(per_draw), rel=1e-6)
    rec = lm.records[(CONTEXT, CONTINUATION)]
    assert rec["se"] == pytest.approx(np.std(per_draw, ddof=1) / math.sqrt(n), rel=1e-6) and rec["se"] > 0
    assert greedy is False
    # seeded: the same seed repeats bit for bit, another seed draws other t and noise
    again = DLMHarness(checkpoint=str(ckpts[algo]), num_mc_samples=n, batch_size=b, seed=seed)
    assert again.loglikelihood(instances([(CONTEXT, CONTINUATION)]))[0][0] == ll
    other = DLMHarness(checkpoint=str(ckpts[algo]), num_mc_samples=n, batch_size=b, seed=seed + 1)
    assert other.loglikelihood(instances([(CONTEXT, CONTINUATION)]))[0][0] != ll


def test_overlong_requests_score_zero_as_the_original_or_keep_the_latest_context(ckpts):
    from dlm.evaluation.downstream import DLMHarness, continuation_loglikelihood, encode_request

    long_context = " ".join(["And the LORD spake unto Moses, saying"] * 6)
    zero = DLMHarness(checkpoint=str(ckpts["ar"]), overlong="zero")
    [(ll, _)] = zero.loglikelihood(instances([(long_context, CONTINUATION)]))
    assert ll == 0.0 and zero.records[(long_context, CONTINUATION)]["overlong"]
    cut = DLMHarness(checkpoint=str(ckpts["ar"]), overlong="truncate")
    [(ll, _)] = cut.loglikelihood(instances([(long_context, CONTINUATION)]))
    m = cut.module
    L = m.hparams.block_length
    prefix, target = encode_request(cut.tok, cut.bos, cut.eos, long_context, CONTINUATION)
    assert len(prefix) + len(target) > L
    kept = [prefix[0]] + prefix[len(prefix) + len(target) - L + 1:]
    assert len(kept) + len(target) == L
    assert ll == continuation_loglikelihood(m, kept, target, 1, 1, 0)["ll"] < 0
    with pytest.raises(ValueError, match="overlong"):
        DLMHarness(checkpoint=str(ckpts["ar"]), overlong="clip")


@pytest.fixture(scope="module")
def task(packed, tmp_path_factory):
    """The next-sentence task built from the packed fixture's held-out chapters (32-token blocks)."""
    from dlm.evaluation.downstream_task import build_task

    d = tmp_path_factory.mktemp("task") / "next_clause"
    spec = {"kind": "next_sentence", "questions": 10, "choices": 4, "context_tokens": 14, "min_choice_tokens": 3,
            "max_choice_tokens": 14, "split": "phrase", "seed": 5}
    summary = build_task(spec, str(packed.parent / "valid.jsonl"), str(packed.parent / "tok"), "next_clause",
                         str(d / "next_clause.yaml"), str(d / "test.jsonl"), block_length=32)
    return d, spec, summary


def test_built_task_is_an_lm_eval_yaml_task_over_held_out_text(task, packed):
    from lm_eval.tasks import TaskManager

    from dlm.data.tokenizer import load_tokenizer
    from dlm.evaluation.downstream import encode_request
    from dlm.evaluation.downstream_task import segments
    from dlm.utils import read_jsonl

    d, spec, summary = task
    cfg = yaml.safe_load((d / "next_clause.yaml").read_text())
    assert cfg["task"] == "next_clause" and cfg["output_type"] == "multiple_choice"
    assert cfg["dataset_path"] == "json" and cfg["dataset_kwargs"]["data_files"]["test"] == str(d / "test.jsonl")
    assert {m["metric"] for m in cfg["metric_list"]} == {"acc", "acc_norm"}
    assert "next_clause" in TaskManager(include_path=str(d), include_defaults=False).all_tasks
    docs = [segments(r["text"], "phrase") for _, r in read_jsonl(packed.parent / "valid.jsonl")]
    rows = [json.loads(x) for x in (d / "test.jsonl").read_text().splitlines()]
    assert len(rows) == summary["questions"] == 10 and [r["id"] for r in rows] == list(range(10))
    tok = load_tokenizer(str(packed.parent / "tok"))
    for r in rows:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4 and 0 <= r["label"] < 4
        doc, j = docs[r["doc"]], r["segment"]
        assert r["choices"][r["label"]] == doc[j]  # the answer is the segment that follows the context
        assert doc[:j] and " ".join(doc[:j]).endswith(r["context"])  # whole preceding segments of that document
        others = [c for i, c in enumerate(r["choices"]) if i != r["label"]]
        assert not set(others) & set(doc)  # distractors come from other documents
        for c in r["choices"]:  # every request fits a 32-token block, tokenized as the harness does
            prefix, target = encode_request(tok, 0, 0, r["context"], " " + c)
            assert len(prefix) + len(target) <= 32 and 3 <= len(target) - 1 <= 14
    assert len({r["label"] for r in rows}) > 1  # the answer's position is drawn


def test_shuffled_distractors_are_the_answer_in_other_word_orders(task, packed, tmp_path):
    from dlm.evaluation.downstream_task import build_task

    d, spec, _ = task
    build_task(spec | {"distractors": "shuffled"}, str(packed.parent / "valid.jsonl"), str(packed.parent / "tok"),
               "t", str(tmp_path / "t.yaml"), str(tmp_path / "t.jsonl"), block_length=32)
    rows = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(rows) == 10
    for r in rows:
        answer = r["choices"][r["label"]]
        assert len(set(r["choices"])) == 4
        assert all(sorted(c.split(" ")) == sorted(answer.split(" ")) for c in r["choices"])


def test_task_rebuild_is_identical_and_bad_settings_name_the_task(task, packed, tmp_path):
    from dlm.evaluation.downstream_task import build_task

    d, spec, _ = task
    build_task(spec, str(packed.parent / "valid.jsonl"), str(packed.parent / "tok"), "next_clause",
               str(tmp_path / "t.yaml"), str(tmp_path / "t.jsonl"), block_length=32)
    assert (tmp_path / "t.jsonl").read_bytes() == (d / "test.jsonl").read_bytes()
    with pytest.raises(ValueError, match="next_clause.*block length 32"):
        build_task(spec | {"context_tokens": 20}, str(packed.parent / "valid.jsonl"), str(packed.parent / "tok"),
                   "next_clause", str(tmp_path / "u.yaml"), str(tmp_path / "u.jsonl"), block_length=32)
    with pytest.raises(ValueError, match="asked for 100000"):
        build_task(spec | {"questions": 100000}, str(packed.parent / "valid.jsonl"), str(packed.parent / "tok"),
                   "next_clause", str(tmp_path / "u.yaml"), str(tmp_path / "u.jsonl"), block_length=32)
    assert not (tmp_path / "u.jsonl").exists()


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_lm_eval_runs_the_local_task_offline_and_its_accuracy_is_our_argmax(task, ckpts, tmp_path, no_network):
    from dlm.evaluation.downstream import evaluate_downstream

    d, spec, _ = task
    rows = [json.loads(x) for x in (d / "test.jsonl").read_text().splitlines()]
    for algo in ("ar", "mdlm"):
        out, qs = tmp_path / f"{algo}.json", tmp_path / f"{algo}.jsonl"
        res = evaluate_downstream(str(ckpts[algo]), ["next_clause"], str(out), str(qs), [str(d)], num_mc_samples=4,
                                  batch_size=4, seed=0, run=algo)
        t = json.loads(out.read_text())["tasks"]["next_clause"]
        assert t == res["tasks"]["next_clause"]
        assert t["n"] == 10 and t["chance"] == 0.25 and t["overlong"] == 0
        questions = [json.loads(x) for x in qs.read_text().splitlines()]
        assert [q["doc_id"] for q in questions] == list(range(10))
        assert [q["target"] for q in questions] == [r["label"] for r in rows]
        # lm-eval's accuracy is the share of questions whose highest-ll choice is the answer
        assert t["acc"] == pytest.approx(np.mean([q["pred"] == q["target"] for q in questions]))
        assert t["acc_stderr"] == pytest.approx(np.std([q["pred"] == q["target"] for q in questions], ddof=1)
                                                / math.sqrt(10))
        if algo == "ar":
            assert t["mc_se_max"] == 0 and res["mc_draws"] == 1
        else:
            assert t["mc_se_mean"] > 0 and 0 <= t["mc_ambiguous"] <= 1 and res["mc_draws"] == 4
        assert res["settings"]["loss_avg_mode"] == "full" and res["settings"]["lm_eval_version"]


def test_unknown_task_is_named_before_any_model_is_loaded(tmp_path, monkeypatch):
    import lm_eval.tasks

    from dlm.evaluation.downstream import evaluate_downstream

    class Index:  # lm-eval's own index of ~10k task files takes seconds to build: a stand-in that knows none
        def __init__(self, include_path=None, include_defaults=True):
            assert include_defaults and include_path == [str(tmp_path)]
            self.all_tasks = []

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", Index)
    with pytest.raises(ValueError, match="no_such_task"):
        evaluate_downstream(str(tmp_path / "missing.ckpt"), ["no_such_task"], str(tmp_path / "o.json"),
                            str(tmp_path / "q.jsonl"), [str(tmp_path)])


def _json(path, run, algo, tasks, group=None, train_seed=1):
    path.write_text(json.dumps({"run": run, "group": group or run, "train_seed": train_seed, "algo": algo,
                                "params": 1000, "train_steps": 10, "mc_draws": 16, "tasks": tasks}))
    return str(path)


def test_table_rows_runs_columns_tasks_with_stderr_chance_row_and_seed_means(tmp_path):
    from dlm.report.downstream_table import downstream_table

    def t(acc, se, chance=0.25):
        return {"acc": acc, "acc_stderr": se, "acc_norm": acc / 2, "acc_norm_stderr": se, "n": 100,
                "chance": chance, "mc_se_mean": 0.01, "mc_se_max": 0.02, "mc_ambiguous": 0.1, "overlong": 0}

    jsons = [_json(tmp_path / "a.json", "ar", "ar", {"x": t(0.5, 0.05), "y": t(0.6, 0.04, 0.5)}),
             _json(tmp_path / "b.json", "duo", "duo", {"x": t(0.3, 0.05), "y": t(0.5, 0.05, 0.5)}),
             _json(tmp_path / "c.json", "duo_s2", "duo", {"x": t(0.4, 0.05), "y": t(0.6, 0.05, 0.5)}, "duo", 2)]
    df = downstream_table(jsons, tmp_path / "downstream")
    csv = pd.read_csv(tmp_path / "downstream.csv")
    assert list(csv["run"]) == ["chance", "ar", "duo"]
    ar = csv.set_index("run").loc["ar"]
    assert ar["x"] == pytest.approx(50.0) and ar["x_se"] == pytest.approx(5.0) and ar["avg"] == pytest.approx(55.0)
    assert ar["avg_se"] == pytest.approx(math.hypot(5.0, 4.0) / 2)
    assert ar["z_chance"] == pytest.approx((55.0 - 37.5) / (math.hypot(5.0, 4.0) / 2))
    duo = csv.set_index("run").loc["duo"]
    assert duo["n_seeds"] == 2 and duo["x"] == pytest.approx(35.0) and duo["x_sd"] == pytest.approx(np.std([30, 40], ddof=1) * 1.0)
    chance = csv.set_index("run").loc["chance"]
    assert chance["x"] == 25.0 and chance["y"] == 50.0 and chance["avg"] == 37.5
    md = (tmp_path / "downstream.md").read_text()
    assert "**50.00 ± 5.00**" in md and "35.00 ± 3.54 |   7.07" in md
    assert "\\toprule" in (tmp_path / "downstream.tex").read_text()
    assert len(df) == 3


def test_table_refuses_jsons_with_different_tasks(tmp_path):
    from dlm.report.downstream_table import downstream_table

    t = {"acc": 0.5, "acc_stderr": 0.05, "n": 10, "chance": 0.25}
    jsons = [_json(tmp_path / "a.json", "ar", "ar", {"x": t}), _json(tmp_path / "b.json", "mdlm", "mdlm", {"y": t})]
    with pytest.raises(ValueError, match="b.json.*tasks"):
        downstream_table(jsons, tmp_path / "downstream")


def test_table_shows_paper_rows_for_a_paper_dataset(tmp_path):
    from dlm.report.downstream_table import downstream_table

    pv = tmp_path / "pv.yaml"
    pv.write_text(yaml.safe_dump({"tolerance": {"accuracy": {"absolute": 2.0}}, "values": [
        {"dataset": "owt", "table": "downstream", "run": "duo_pp", "corpus": "arc_easy", "metric": "accuracy",
         "value": 28.28, "source": "test"}]}))
    t = {"acc": 0.30, "acc_stderr": 0.01, "n": 2000, "chance": 0.25}
    jsons = [_json(tmp_path / "a.json", "duo_pp", "duo", {"arc_easy": t})]
    downstream_table(jsons, tmp_path / "d", paper_values_path=str(pv), dataset="owt")
    csv = pd.read_csv(tmp_path / "d.csv")
    assert list(csv["source"]) == ["chance", "ours", "test"]
    assert csv.loc[2, "arc_easy"] == pytest.approx(28.28) and csv.loc[1, "tolerance"] == "within ±2"
