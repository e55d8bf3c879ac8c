"""Unigram entropy of generated samples (a diversity check next to generative perplexity).

Follows DUO's metric: for one sample of token ids, p_v = count_v / len over *all* positions
(special tokens such as EOS included, no filtering), H = -sum_v p_v ln p_v in nats; the reported
number is the plain mean of H over samples.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence


def unigram_entropy(token_ids: Sequence[int]) -> float:
    """Entropy (nats) of the unigram distribution of one sample's token ids."""
    ids = [int(t) for t in token_ids]
    if not ids:
        raise ValueError("unigram_entropy: empty token sequence")
    n = len(ids)
    h = 0.0
    # Sort the counts so the floating-point summation order (and hence the result) is deterministic.
    for c in sorted(Counter(ids).values()):
        p = c / n
        h -= p * math.log(p)
    return h


def mean_entropy(samples: list[list[int]]) -> float:
    """Mean over samples of `unigram_entropy` (each sample weighs the same)."""
    if not samples:
        raise ValueError("mean_entropy: no samples")
    return math.fsum(unigram_entropy(s) for s in samples) / len(samples)
