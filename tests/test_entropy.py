import math

import pytest
import torch

from dlm.evaluation.entropy import mean_entropy, unigram_entropy


def test_constant_sequence_has_zero_entropy():
    assert unigram_entropy([7] * 13) == 0.0


@pytest.mark.parametrize("n", [1, 2, 5, 64])
def test_distinct_tokens_give_log_n(n):
    assert unigram_entropy(list(range(n))) == pytest.approx(math.log(n), abs=1e-12)
    assert unigram_entropy(list(range(n)) * 3) == pytest.approx(math.log(n), abs=1e-12)


def test_mixed_example_by_hand():
    # counts {1: 2, 2: 1, 3: 1} -> p = (1/2, 1/4, 1/4), H = 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2
    assert unigram_entropy([1, 2, 1, 3]) == pytest.approx(1.5 * math.log(2), abs=1e-12)
    # counts (3, 1) -> H = -(3/4 ln 3/4 + 1/4 ln 1/4)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert unigram_entropy([50256, 4, 50256, 50256]) == pytest.approx(h, abs=1e-12)


def test_matches_duo_torch_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 40, (200,), generator=g)
    _, counts = torch.unique(x, return_counts=True)
    duo = torch.special.entr(counts.double() / counts.sum()).sum().item()
    assert unigram_entropy(x.tolist()) == pytest.approx(duo, rel=1e-12)


def test_mean_entropy_and_errors():
    assert mean_entropy([[1, 1], [1, 2]]) == pytest.approx(math.log(2) / 2)
    with pytest.raises(ValueError):
        mean_entropy([])
    with pytest.raises(ValueError):
        unigram_entropy([])
