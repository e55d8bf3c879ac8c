"""A multiple-choice task built from held-out text, in lm-eval-harness's own task format (a YAML task that
reads a local JSONL file), so that the embedded default measures downstream accuracy offline through
lm-eval itself (`dlm.evaluation.downstream`).

Kind ``next_sentence`` ("which of these is the segment that comes next?"): each held-out document is cut into
segments (``split: sentence`` at . ! ? followed by white space; ``clause`` also at : and ;; ``phrase`` also at
commas, for short blocks such as the smoke test's). A question is a segment j >= 1 of a document: its context
is as many whole preceding segments of the same document as fit in `context_tokens`, the correct choice is
segment j, and the `choices` - 1 distractors are

* ``distractors: other_documents``: segments of *other* documents of about the same token length (drawn among
  the nearest lengths), so that only the link to the context tells the answer (topic, names, syntax across
  the boundary);
* ``shuffled``: the answer's own words in other random orders, so that the words and nearly the tokens are
  the same and only word order tells the answer (a fluency test that small models pass well above chance).

Every choice has between `min_choice_tokens` and `max_choice_tokens` tokens, and [BOS] + context + choice +
[EOS], tokenized as the harness tokenizes a request, fits in `block_length`. Questions, distractors and the
position of the answer are drawn from one generator seeded with `seed`, so the task file is identical on
every rebuild.

The YAML names the JSONL by the path it was written to (relative paths are relative to the working
directory, as every path of the workflow); lm-eval's ``json`` loader reads it without network.
"""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np
import yaml

from dlm.utils import read_jsonl, write_text

log = logging.getLogger("dlm.downstream_task")

DISTRACTORS = ("other_documents", "shuffled")
SPLITS = {"sentence": r"(?<=[.!?])\s+", "clause": r"(?<=[.!?;:])\s+", "phrase": r"(?<=[.!?;:,])\s+"}


def segments(text: str, split: str) -> list[str]:
    """The non-blank segments of `text`, cut after sentence (or clause) punctuation followed by white space."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return [s.strip() for s in re.split(SPLITS[split], text) if s.strip()]


def request_lengths(tok, context: str, choice: str) -> tuple[int, int]:
    """Token counts of the harness's prefix [BOS] + context and target " " + choice + [EOS] (`dlm.evaluation.
    downstream.encode_request`, lm-eval's default target delimiter " ")."""
    from dlm.evaluation.downstream import encode_request

    prefix, target = encode_request(tok, 0, 0, context, " " + choice)
    return len(prefix), len(target)


def task_yaml(name: str, data_path: str) -> dict:
    """lm-eval's task config of a local multiple-choice task: context -> one of `choices`, answer `label`."""
    return {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data_path)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{context}}",
            "doc_to_choice": "{{choices}}", "doc_to_target": "label",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0}}


def shuffled_words(segment: str, n: int, rng: np.random.Generator, tries: int = 50) -> list[str] | None:
    """`n` distinct reorderings of the segment's words (split at spaces, punctuation staying with its word), none
    equal to the segment; None when the segment has too few words to give them."""
    words = segment.split(" ")
    seen, out = {segment}, []
    for _ in range(tries):
        if len(out) == n:
            break
        candidate = " ".join(words[i] for i in rng.permutation(len(words)))
        if candidate not in seen:
            seen.add(candidate)
            out.append(candidate)
    return out if len(out) == n else None


def build_next_sentence_task(text_jsonl: str | os.PathLike, tokenizer_dir: str | os.PathLike, name: str,
                             yaml_out: str | os.PathLike, data_out: str | os.PathLike, block_length: int,
                             questions: int = 200, choices: int = 4, context_tokens: int = 48,
                             min_choice_tokens: int = 6, max_choice_tokens: int = 40, split: str = "sentence",
                             distractors: str = "other_documents", seed: int = 0) -> dict:
    """Write the task's JSONL (`data_out`: one {"id", "context", "choices", "label", "doc", "segment"} per
    question, in document order) and its lm-eval YAML (`yaml_out`); return a summary. ValueError (naming the
    setting) when the lengths cannot fit `block_length` or the text has too few usable segments."""
    from dlm.data.tokenizer import load_tokenizer

    if choices < 2:
        raise ValueError(f"downstream.local.{name}: choices must be >= 2, got {choices}")
    if not 1 <= min_choice_tokens <= max_choice_tokens:
        raise ValueError(f"downstream.local.{name}: need 1 <= min_choice_tokens ({min_choice_tokens}) <= "
                         f"max_choice_tokens ({max_choice_tokens})")
    if context_tokens + max_choice_tokens + 2 > block_length:
        raise ValueError(f"downstream.local.{name}: context_tokens ({context_tokens}) + max_choice_tokens "
                         f"({max_choice_tokens}) + 2 (BOS, EOS) exceeds the models' block length {block_length}")
    if distractors not in DISTRACTORS:
        raise ValueError(f"downstream.local.{name}: distractors must be one of {DISTRACTORS}, got {distractors!r}")
    tok = load_tokenizer(str(tokenizer_dir))
    docs = [segments(str(row.get("text", "")), split) for _, row in read_jsonl(text_jsonl)]

    def n_choice(text: str) -> int:  # tokens of " " + text (without EOS)
        return request_lengths(tok, "", text)[1] - 1

    def n_context(text: str) -> int:  # tokens of the context (without BOS)
        return request_lengths(tok, text, "")[0] - 1

    choice_len = [[n_choice(s) for s in d] for d in docs]
    ok = [(d, j) for d, lens in enumerate(choice_len) for j, n in enumerate(lens)
          if min_choice_tokens <= n <= max_choice_tokens]  # usable as a choice
    candidates = [(d, j) for d, j in ok if j >= 1 and n_context(docs[d][j - 1]) <= context_tokens]
    rng = np.random.default_rng(seed)
    pool_d = np.array([d for d, _ in ok])
    pool_len = np.array([choice_len[d][j] for d, j in ok])
    rows = []
    for k in rng.permutation(len(candidates)):  # candidates in random order until `questions` are made
        if len(rows) == questions:
            break
        d, j = candidates[k]
        answer = docs[d][j]
        if distractors == "shuffled":  # the answer's own words in other orders (same words, same length)
            wrong = shuffled_words(answer, choices - 1, rng)
            if wrong is None or max(map(n_choice, wrong)) > max_choice_tokens:
                continue
        else:  # other documents' segments, drawn among the 4 (choices - 1) nearest in token length
            other = np.flatnonzero(pool_d != d)
            if len(other) < choices - 1:
                continue
            gap = np.abs(pool_len[other] - choice_len[d][j]) + rng.random(len(other))  # ties broken at random
            near = other[np.argsort(gap)[:4 * (choices - 1)]]
            wrong = [docs[pool_d[p]][ok[p][1]] for p in rng.choice(near, size=choices - 1, replace=False)]
            if len({answer, *wrong}) < choices:
                continue
        # context: whole preceding segments of the document, the nearest first, while they fit
        i = j - 1
        while i > 0 and n_context(" ".join(docs[d][i - 1:j])) <= context_tokens:
            i -= 1
        options = [answer, *wrong]
        order = rng.permutation(choices)
        rows.append({"context": " ".join(docs[d][i:j]), "choices": [options[o] for o in order],
                     "label": int(np.flatnonzero(order == 0)[0]), "doc": d, "segment": j})
    if len(rows) < questions:
        raise ValueError(f"downstream.local.{name}: {text_jsonl} gives {len(rows)} usable questions (segments of "
                         f"{min_choice_tokens}-{max_choice_tokens} tokens after a context that fits in "
                         f"{context_tokens} tokens, {distractors} distractors); asked for {questions}")
    rows = [{"id": i, **r} for i, r in enumerate(sorted(rows, key=lambda r: (r["doc"], r["segment"])))]
    for row in rows:  # the construction guarantees the fit; check it as the harness will tokenize
        for c in row["choices"]:
            n_prefix, n_target = request_lengths(tok, row["context"], c)
            if n_prefix + n_target > block_length:
                raise RuntimeError(f"downstream.local.{name}: question {row['id']} has {n_prefix} + {n_target} "
                                   f"tokens, more than the block length {block_length}")
    write_text(data_out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_text(yaml_out, yaml.safe_dump(task_yaml(name, str(data_out)), sort_keys=False))
    summary = {"task": name, "kind": "next_sentence", "distractors": distractors, "questions": len(rows),
               "choices": choices,
               "candidates": len(candidates), "documents": len(docs), "segments": sum(map(len, docs)),
               "labels": np.bincount([r["label"] for r in rows], minlength=choices).tolist()}
    log.info("downstream task %s: %s", name, summary)
    return summary


def build_task(spec: dict, text_jsonl: str, tokenizer_dir: str, name: str, yaml_out: str, data_out: str,
               block_length: int) -> dict:
    """Build the local task `name` from its config entry (`downstream.local.NAME`: kind + settings)."""
    spec = dict(spec)
    kind = spec.pop("kind", "next_sentence")
    if kind != "next_sentence":
        raise ValueError(f"downstream.local.{name}.kind: unknown kind {kind!r}; expected 'next_sentence'")
    return build_next_sentence_task(text_jsonl, tokenizer_dir, name, yaml_out, data_out, block_length, **spec)
