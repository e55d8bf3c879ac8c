"""The zero-shot detokenizers give exactly the strings of the original MDLM/DUO code.

Every expected string below is written out by hand from the rules of the original functions
(kuleshov-group/mdlm ``dataloader.py``: wt_detokenizer, ptb_detokenizer, lm1b_detokenizer,
lambada_detokenizer), quirks included; see the docstrings in dlm.data.detokenizers.
"""

from __future__ import annotations

import pytest

from dlm.data.detokenizers import (DETOKENIZERS, get_detokenizer, lambada_detokenizer, lm1b_detokenizer,
                                   ptb_detokenizer, scientific_papers_detokenizer, wikitext_detokenizer)


@pytest.mark.parametrize("raw, expected", [
    (" = = Heading = = \n", " == Heading ==\n"),
    (" = = = Sub = = = \n", " === Sub ===\n"),
    ("= = = = Deep = = = =", "==== Deep ===="),
    ("the 1 @,@ 000 @-@ year", "the 1,000-year"),
    ("3 @.@ 5 m", "3.5 m"),
    (" ( a ) ", " (a) "),
    ("( a ( b ) c )", "(a ( b) c )"),            # lazy, first closer wins: nesting is not matched
    (" [ x ] { y } \" z \" ", " [x] {y} \"z\" "),
    ("N", "N"),
    ("in N cases", "in 1 cases"),
    (" N N N ", " 1 N 1 "),                       # one plain pass
    ("10 ° C", "10°C"),
    ("10 °C", "10 °C"),
    ("' quoted '", "'quoted'"),
    ("he said ' yes ' to it", "he said 'yes' to it"),
    ("its ' quoted '", "its'quoted'"),            # "s '" is joined before the quotes are paired
    ("it 's", "it's"),
    ("it 's a ' b", "it's a' b"),                 # the quote pairing runs from the clitic's quote
    ("the boys ' toys", "the boys' toys"),
    ("a , b . c ; d : e ! f ? g", "a, b. c; d: e! f? g"),
    ("a , , b", "a, , b"),                        # plain replace: matches do not overlap
    ("the end .", "the end ."),                   # a final " ." has no space after it
    ("line one . \n line two", "line one.\nline two"),
    ("/' 5/", "/'[0-9]/"),                        # the original's replacement is literal text
])
def test_wikitext(raw, expected):
    assert wikitext_detokenizer(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("it 's n't", "it'sn't"),
    ("they do n't know", "they don't know"),
    ("the players ' union", "the players' union"),
    ("N", "N"),
    ("N years", "N years"),
    (" N N N N ", " 1 1 1 1 "),                   # repeated passes reach every N of a run
    ("$ N", "$ N"),
    ("costs $ N million", "costs $1 million"),
    ("a # N bond", "a #1 bond"),
    ("<unk>", "?"),
    ("the <unk> company", "the ? company"),
    ("a \\/ b", "a / b"),
    ("end \n next", "end\nnext"),
])
def test_ptb(raw, expected):
    assert ptb_detokenizer(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("do n't", "do n't"),                         # " n't" is not joined
    ("I do n't know .", "I do n't know."),
    ("it 's fine", "it's fine"),
    ("they 're here .", "they're here."),
    ("a / b", "a/b"),
    ("' quoted '", "'quoted'"),
    ("he said ' yes ' .", "he said 'yes' ."),     # a period joins a word only
    ("rock ' n ' roll", "rock 'n' roll"),
    ("http : / / x", "http://x"),
    ("https : / / x", "https://x"),
    ("go to http : / / x . com now", "go to http://x . com now"),
    ("Hello .", "Hello ."),                       # the word needs a space before it
    ("I said hello .", "I said hello."),
    ("a b . c . d", "a b. c . d"),                # regex matches do not overlap
    ("Why ?", "Why?"),
    ("Why ? Because", "Why? Because"),
    ("Stop !", "Stop!"),
    ("Stop ! Now", "Stop! Now"),
    ("a , b : c ; d", "a, b: c; d"),
    ('" a " b " c "', '"a" b "c"'),
    ('"  a  "', '" a "'),                         # only one space is stripped on each side
    ("( a ( b ) )", "( a (b) )"),
    ("[ x ]", "[x]"),
    ("cost $ 5", "cost $5"),
    ("\u00a3 5", "\u00a35"),
])
def test_lm1b(raw, expected):
    assert lm1b_detokenizer(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("  \u201cHi,\u201d she said.  ", '\n"Hi," she said.'),
    ("\u2018it\u2019s\u2019", "\n\u2018it\u2019s\u2019"),   # curly single quotes are kept
    ("plain", "\nplain"),
    ("\n  two\nlines \n", "\ntwo\nlines"),
])
def test_lambada(raw, expected):
    assert lambada_detokenizer(raw) == expected


PLAIN = [
    "The cat sat on the mat.",
    "It's 3.5 km-long, isn't it? Yes!",
    'She said "hello" (twice) and left; that was all: fine.',
    "Prices rose 10% to $5 in [2001] and {x}.",
]


@pytest.mark.parametrize("name", sorted(DETOKENIZERS))
@pytest.mark.parametrize("text", PLAIN)
def test_plain_text_is_left_alone_and_output_is_stable(name, text):
    detok = DETOKENIZERS[name]
    out = detok(text)
    assert out == ("\n" + text if name == "lambada" else text)  # scientific_papers: wikitext, then lm1b
    assert detok(out) == out


def test_registry():
    assert DETOKENIZERS == {"wikitext": wikitext_detokenizer, "ptb": ptb_detokenizer,
                            "lm1b": lm1b_detokenizer, "lambada": lambada_detokenizer,
                            "scientific_papers": scientific_papers_detokenizer}
    assert all(get_detokenizer(name) is fn for name, fn in DETOKENIZERS.items())


# Whole rows in each corpus's raw style (as the hub datasets / OpenAI's file store them), each expected string
# derived by hand from the original's rules applied in order (the comments name the rules that fire).
@pytest.mark.parametrize("raw, expected", [
    # a heading line: "= =" -> "==", then " \n" -> "\n"
    (" = = Description = = \n", " == Description ==\n"),
    (" = Homarus gammarus = \n", " = Homarus gammarus =\n"),
    # @-@ / @,@ / @.@, " ; " " , " " . " joins, ( ) stripped, " ° " joined, " \n" dropped, " 's" last
    (" The lobster 's body is 1 @,@ 000 @-@ year @-@ old , with a length of 60 @.@ 5 cm ( 24 in ) ; it lives at "
     "10 ° C . \n",
     " The lobster's body is 1,000-year-old, with a length of 60.5 cm (24 in); it lives at 10°C.\n"),
    # "s '" joins first; the single quotes are then paired; " N " -> " 1 " once (a final "N." is not " N ")
    (" He said ' the N ships ' were lost in N . \n", " He said 'the 1 ships' were lost in N.\n"),
    (' The song " Crazy in Love " reached number one . \n', ' The song "Crazy in Love" reached number one.\n'),
    ("", ""),
])
def test_wikitext_raw_rows(raw, expected):
    assert wikitext_detokenizer(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    # " 's", then " N " -> " 1 " (each passes), then "$ 1" -> "$1"
    ("the company 's stock fell $ N to $ N a share", "the company's stock fell $1 to $1 a share"),
    # " n't" joins, " N " -> " 1 ", "<unk>" -> "?"
    ("mr. <unk> is N years old and was n't available for comment",
     "mr. ? is 1 years old and wasn't available for comment"),
    # "s ' " -> "s' "; a sentence-final N has no space after it and stays
    ("the investors ' shares rose N N", "the investors' shares rose 1 N"),
    ("yields \\/ rates", "yields / rates"),
    ("consumers may want to move their telephones a little closer to the tv set",
     "consumers may want to move their telephones a little closer to the tv set"),
])
def test_ptb_raw_sentences(raw, expected):
    assert ptb_detokenizer(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    # " 's" attaches, the final " said ." joins, " , " joins, "$ " -> "$"
    ("The company 's shares rose 5 % to $ 3.50 , analysts said .",
     "The company's shares rose 5 % to $3.50, analysts said."),
    # " 're" attaches; the quote pair (space inside both ends) is stripped after ", " joined
    ('" We \'re very pleased , " he said .', '"We\'re very pleased," he said.'),
    # " n't" is not attached; ") ." is not a word before the period; the parentheses are stripped
    ("I do n't know ( yet ) .", "I do n't know (yet) ."),
    # the URL is rebuilt, then " / " -> "/" joins the path
    ("See http : / / www.example.com / news for details .", "See http://www.example.com/news for details."),
    # " ? " -> "? ", a final " !" joins, then the single quotes pair
    ("He asked , ' Why ? ' and left !", "He asked, 'Why?' and left!"),
    ("Mr. Smith paid \u00a3 5 million ; shares fell .", "Mr. Smith paid \u00a35 million; shares fell."),
])
def test_lm1b_raw_sentences(raw, expected):
    assert lm1b_detokenizer(raw) == expected


def test_lambada_raw_passage():
    raw = "\u201cI don\u2019t know,\u201d she said. \u201cMaybe.\u201d\n"
    assert lambada_detokenizer(raw) == '\n"I don\u2019t know," she said. "Maybe."'


def test_scientific_papers_article_wikitext_then_lm1b():
    raw = ("we study the @xmath0 model ( see ref . @xcite ) . \n the results are shown in fig . [ fig : 1 ] , "
           "where the boys ' data are used .")
    # wikitext: "s '" joins, " : " " . " " , " join, ( ) and [ ] stripped, the newline's spaces dropped;
    # then lm1b: the final " used ." joins
    assert scientific_papers_detokenizer(raw) == ("we study the @xmath0 model (see ref. @xcite).\nthe results are "
                                                  "shown in fig. [fig: 1], where the boys' data are used.")
