"""Detokenizers that undo the whitespace tokenisation of classic LM benchmarks.

The evaluation corpora used by the MDLM/DUO papers (WikiText, PTB, LM1B, LAMBADA) ship pre-tokenised
text ("the cat 's toy , he said ."). Before re-tokenising with a BPE we turn them back into ordinary
text (arXiv / PubMed articles get the WikiText rules and then the LM1B rules; AG News none). The BPE
tokens, and so the perplexity, follow from the exact string, so every function here reproduces the
string of its counterpart in the original MDLM code (kuleshov-group/mdlm, ``dataloader.py``;
s-sahoo/duo has the same functions) rule for rule and in the same order, quirks included: a rule that
looks wrong (a sentence-final " ." left alone, "s '" joined before a quote is paired, ...) is kept on
purpose. Each function is a small, pure str -> str map; `DETOKENIZERS` maps
the config names to them.
"""

from __future__ import annotations

import re
from typing import Callable

# wt_detokenizer's regexes, in the order it applies them
_WT_SLASH_QUOTE_DIGIT = re.compile(r"/' [0-9]/")
_WT_PAIRS = [
    (re.compile(r"\(\s*([^\)]*?)\s*\)"), r"(\1)"),
    (re.compile(r"\[\s*([^\]]*?)\s*\]"), r"[\1]"),
    (re.compile(r"{\s*([^}]*?)\s*}"), r"{\1}"),
    (re.compile(r"\"\s*([^\"]*?)\s*\""), r'"\1"'),
    (re.compile(r"'\s*([^']*?)\s*'"), r"'\1'"),
]


def wikitext_detokenizer(text: str) -> str:
    """WikiText, as the original ``wt_detokenizer``. Rules, in this order (plain = str.replace):

    1. "s '" -> "s'" (plain; also hits "is 'x" and the opening quote of "s ' quoted '").
    2. regex "/' [0-9]/" -> the literal text "/'[0-9]/" (the original's replacement has no group).
    3. " @-@ " -> "-", " @,@ " -> ",", " @.@ " -> ".".
    4. " : " -> ": ", " ; " -> "; ", " . " -> ". ", " ! " -> "! ", " ? " -> "? ", " , " -> ", "
       (plain, so the symbol needs a space on both sides: a final " ." stays, and in "a , , b" only
       the first comma is joined).
    5. strip the spaces just inside (...), [...], {...}, "..." and '...', each a lazy regex that runs
       from an opener to the first closer (nesting is not matched).
    6. "= = = =" -> "====", then "= = =" -> "===", then "= =" -> "==".
    7. " ° " -> "°".
    8. " \\n" -> "\\n", then "\\n " -> "\\n".
    9. " N " -> " 1 " (a single plain pass: in " N N " only the first N becomes 1).
    10. " 's" -> "'s".
    """
    s = text
    s = s.replace("s '", "s'")
    s = _WT_SLASH_QUOTE_DIGIT.sub("/'[0-9]/", s)
    s = s.replace(" @-@ ", "-")
    s = s.replace(" @,@ ", ",")
    s = s.replace(" @.@ ", ".")
    for sym in ":;.!?,":
        s = s.replace(f" {sym} ", f"{sym} ")
    for pattern, repl in _WT_PAIRS:
        s = pattern.sub(repl, s)
    s = s.replace("= = = =", "====")
    s = s.replace("= = =", "===")
    s = s.replace("= =", "==")
    s = s.replace(" \u00b0 ", "\u00b0")
    s = s.replace(" \n", "\n")
    s = s.replace("\n ", "\n")
    s = s.replace(" N ", " 1 ")
    s = s.replace(" 's", "'s")
    return s


def ptb_detokenizer(text: str) -> str:
    """Penn Treebank (Mikolov version), as the original ``ptb_detokenizer``. Rules, in this order:

    1. " 's" -> "'s", then "s ' " -> "s' ", then " n't" -> "n't".
    2. " \\n " -> "\\n", then "\\/" -> "/".
    3. " N " -> " 1 ", as 10 plain passes (two already turn every space-delimited N of a run into 1).
    4. "$ 1" -> "$1", then "# 1" -> "#1".
    5. "<unk>" -> "?".
    """
    s = text
    s = s.replace(" 's", "'s")
    s = s.replace("s ' ", "s' ")
    s = s.replace(" n't", "n't")
    s = s.replace(" \n ", "\n")
    s = s.replace("\\/", "/")
    for _ in range(10):
        s = s.replace(" N ", " 1 ")
    s = s.replace("$ 1", "$1")
    s = s.replace("# 1", "#1")
    s = s.replace("<unk>", "?")
    return s


# lm1b_detokenizer's regexes, in the order it applies them
_LM1B_CLITIC = re.compile(r" '(\w+)")
_LM1B_PERIOD_MID = re.compile(r" (\w+) \. ")
_LM1B_PERIOD_END = re.compile(r" (\w+) \.$")
_LM1B_QUESTION_END = re.compile(r" \?$")
_LM1B_BANG_END = re.compile(r" !$")
_LM1B_PAIRS = [
    (re.compile(r"\" ([^\"]+) \""), r'"\1"'),
    (re.compile(r"' ([^']+) '"), r"'\1'"),
    (re.compile(r"\( ([^()]+) \)"), r"(\1)"),
    (re.compile(r"\[ ([^\[\]]+) \]"), r"[\1]"),
]


def lm1b_detokenizer(text: str) -> str:
    """One Billion Words, as the original ``lm1b_detokenizer``. Rules, in this order:

    1. "http : / / " -> "http://", then "https : / / " -> "https://".
    2. regex " '(\\w+)" -> "'\\1" (attach "'s", "'re", ... ; " n't" is NOT joined: "do n't" stays).
    3. regex " (\\w+) \\. " -> " \\1. ", then " (\\w+) \\.$" -> " \\1.": a period joins only a word
       that has a space before it, so "Hello ." and "it's ." stay, and matches do not overlap
       ("a b . c . d" -> "a b. c . d").
    4. " ? " -> "? ", regex " \\?$" -> "?", " ! " -> "! ", regex " !$" -> "!".
    5. " , " -> ", ", " : " -> ": ", " ; " -> "; ", " / " -> "/" (plain).
    6. strip exactly one space inside "...", then '...', then (...), then [...]: each regex needs
       "opener space text space closer" with no opener/closer in the text ('"  a  "' -> '" a "').
    7. "$ " -> "$", then "£ " -> "£".
    """
    s = text
    s = s.replace("http : / / ", "http://")
    s = s.replace("https : / / ", "https://")
    s = _LM1B_CLITIC.sub(r"'\1", s)
    s = _LM1B_PERIOD_MID.sub(r" \1. ", s)
    s = _LM1B_PERIOD_END.sub(r" \1.", s)
    s = s.replace(" ? ", "? ")
    s = _LM1B_QUESTION_END.sub("?", s)
    s = s.replace(" ! ", "! ")
    s = _LM1B_BANG_END.sub("!", s)
    s = s.replace(" , ", ", ")
    s = s.replace(" : ", ": ")
    s = s.replace(" ; ", "; ")
    s = s.replace(" / ", "/")
    for pattern, repl in _LM1B_PAIRS:
        s = pattern.sub(repl, s)
    s = s.replace("$ ", "$")
    s = s.replace("\u00a3 ", "\u00a3")
    return s


def lambada_detokenizer(text: str) -> str:
    """LAMBADA, as the original ``lambada_detokenizer``. Rules, in this order:

    1. curly double quotes \u201c and \u201d -> '"' (curly single quotes are left as they are).
    2. strip surrounding whitespace and prepend a newline.
    """
    s = text.replace("\u201c", '"')
    s = s.replace("\u201d", '"')
    return "\n" + s.strip()


def scientific_papers_detokenizer(text: str) -> str:
    """arXiv / PubMed articles (``scientific_papers``), as the original ``scientific_papers_detokenizer``:
    the WikiText rules, then the LM1B rules, on the same string."""
    return lm1b_detokenizer(wikitext_detokenizer(text))


DETOKENIZERS: dict[str, Callable[[str], str]] = {
    "wikitext": wikitext_detokenizer,
    "ptb": ptb_detokenizer,
    "lm1b": lm1b_detokenizer,
    "lambada": lambada_detokenizer,
    "scientific_papers": scientific_papers_detokenizer,
}


def get_detokenizer(name: str | None) -> Callable[[str], str] | None:
    """The detokenizer called `name`, or None for None; unknown names raise ValueError."""
    if name is None:
        return None
    try:
        return DETOKENIZERS[name]
    except KeyError:
        raise ValueError(f"unknown detokenizer {name!r}; expected one of {sorted(DETOKENIZERS)} or null") from None
