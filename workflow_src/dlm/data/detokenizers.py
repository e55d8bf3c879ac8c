"""Detokenizers that undo the whitespace tokenisation of classic LM benchmarks.

The evaluation corpora used by the MDLM/DUO papers (WikiText, PTB, LM1B, LAMBADA) ship pre-tokenised
text ("the cat 's toy , he said ."). Before re-tokenising with a BPE we turn them back into ordinary
text. Each function is a small, pure str -> str map; `DETOKENIZERS` maps the config names to them.
"""

from __future__ import annotations

import re
from typing import Callable

_PUNCT_AFTER_SPACE = re.compile(r" ([:;.!?,])(?=\s|$)")
_HEADING = re.compile(r"=(?: =)+")
_INNER_SPACES = [
    (re.compile(r"\(\s*([^()]*?)\s*\)"), r"(\1)"),
    (re.compile(r"\[\s*([^\[\]]*?)\s*\]"), r"[\1]"),
    (re.compile(r"\{\s*([^{}]*?)\s*\}"), r"{\1}"),
    (re.compile(r'"\s*([^"]*?)\s*"'), r'"\1"'),
]


def wikitext_detokenizer(text: str) -> str:
    """WikiText: '3 @.@ 5' -> '3.5', 'a , b' -> 'a, b', '( x )' -> '(x)', '= = H = =' -> '== H ==', " 's" -> "'s".

    Single quotes are not paired (they clash with apostrophes); only the possessives are attached.
    """
    s = text
    s = s.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    s = _PUNCT_AFTER_SPACE.sub(r"\1", s)
    for pattern, repl in _INNER_SPACES:
        s = pattern.sub(repl, s)
    s = _HEADING.sub(lambda m: m.group(0).replace(" ", ""), s)
    s = s.replace(" 's", "'s").replace("s ' ", "s' ")
    s = s.replace(" \n", "\n").replace("\n ", "\n")
    return s


_PTB_NUMBER = re.compile(r"(?<= )N(?= )")


def ptb_detokenizer(text: str) -> str:
    """Penn Treebank (Mikolov version): " 's" -> "'s", " n't" -> "n't", 'N' -> '1', '<unk>' -> '?', '\\/' -> '/'."""
    s = text
    s = s.replace(" 's", "'s").replace("s ' ", "s' ").replace(" n't", "n't")
    s = s.replace(" \n ", "\n").replace("\\/", "/")
    s = _PTB_NUMBER.sub("1", s)  # lookarounds: consecutive " N N " are all replaced
    s = s.replace("$ 1", "$1").replace("# 1", "#1")
    s = s.replace("<unk>", "?")
    return s


_LM1B_CLITIC = re.compile(r" '(\w+)")
_LM1B_PUNCT = re.compile(r" ([.?!,:;])(?= |$)")
_LM1B_INNER = [
    (re.compile(r'" ([^"]+?) "'), r'"\1"'),
    (re.compile(r"\( ([^()]+?) \)"), r"(\1)"),
    (re.compile(r"\[ ([^\[\]]+?) \]"), r"[\1]"),
]


def lm1b_detokenizer(text: str) -> str:
    """One Billion Words: attach clitics ("it 's") and . ? ! , : ; to the previous word, '( x )' -> '(x)', '$ 5' -> '$5'."""
    s = text
    s = s.replace("http : / / ", "http://").replace("https : / / ", "https://")
    s = _LM1B_CLITIC.sub(r"'\1", s)
    s = s.replace(" n't", "n't")
    s = _LM1B_PUNCT.sub(r"\1", s)
    for pattern, repl in _LM1B_INNER:
        s = pattern.sub(repl, s)
    s = s.replace("$ ", "$").replace("\u00a3 ", "\u00a3")
    return s


def lambada_detokenizer(text: str) -> str:
    """LAMBADA: curly quotes -> straight quotes, strip, and prepend a newline (as in the MDLM evaluation)."""
    s = text.replace("\u201c", '"').replace("\u201d", '"')
    s = s.replace("\u2018", "'").replace("\u2019", "'")
    return "\n" + s.strip()


DETOKENIZERS: dict[str, Callable[[str], str]] = {
    "wikitext": wikitext_detokenizer,
    "ptb": ptb_detokenizer,
    "lm1b": lm1b_detokenizer,
    "lambada": lambada_detokenizer,
}


def get_detokenizer(name: str | None) -> Callable[[str], str] | None:
    """The detokenizer called `name`, or None for None; unknown names raise ValueError."""
    if name is None:
        return None
    try:
        return DETOKENIZERS[name]
    except KeyError:
        raise ValueError(f"unknown detokenizer {name!r}; expected one of {sorted(DETOKENIZERS)} or null") from None
