import pytest
import torch

from dlm.models.dit import PRESETS, DiT, make_config
from dlm.models.ema import EMA


def test_zero_init_output_is_uniform():
    m = DiT(make_config(50, 16, "nano"))
    logits = m(torch.randint(0, 50, (2, 16)), torch.rand(2))
    assert logits.shape == (2, 16, 50)
    assert torch.all(logits == 0)


def perturb(m):
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))


def test_bidirectional_attends_to_future_and_causal_does_not():
    torch.manual_seed(0)
    for causal in (False, True):
        m = DiT(make_config(40, 12, "nano", dropout=0.0, causal=causal)).eval()
        perturb(m)
        x = torch.randint(0, 40, (1, 12))
        y = x.clone()
        y[0, -1] = (x[0, -1] + 1) % 40  # change only the last token
        sigma = None if causal else torch.zeros(1)
        a, b = m(x, sigma), m(y, sigma)
        changed_first = not torch.allclose(a[0, 0], b[0, 0])
        assert changed_first == (not causal)


def test_kv_cache_matches_full_forward():
    torch.manual_seed(0)
    m = DiT(make_config(40, 12, "micro", dropout=0.0, causal=True)).eval()
    perturb(m)
    x = torch.randint(0, 40, (3, 12))
    full = m(x)
    cache = m.new_cache()
    steps = [m(x[:, i:i + 1], kv_cache=cache, start=i) for i in range(12)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_time_conditioning_changes_output():
    torch.manual_seed(0)
    m = DiT(make_config(40, 8, "nano", dropout=0.0)).eval()
    perturb(m)
    x = torch.randint(0, 40, (1, 8))
    assert not torch.allclose(m(x, torch.tensor([0.1])), m(x, torch.tensor([3.0])))


def test_soft_input_equals_one_hot_lookup():
    m = DiT(make_config(40, 8, "nano", dropout=0.0)).eval()
    perturb(m)
    x = torch.randint(0, 40, (2, 8))
    onehot = torch.nn.functional.one_hot(x, 40).float()
    assert torch.allclose(m(x, torch.zeros(2)), m(onehot, torch.zeros(2)), atol=1e-5)


def test_paper_sizes_parameter_counts():
    # MDLM/DUO `small` with the GPT-2 vocabulary (K = 50258, untied head): ~169.6M parameters
    cfg = make_config(50258, 1024, "small")
    with torch.device("meta"):
        n = DiT(cfg).num_params()
    assert 165e6 < n < 175e6
    assert set(PRESETS) >= {"small", "medium"}


def test_bad_config():
    with pytest.raises(ValueError, match="divisible"):
        make_config(10, 8, {"hidden": 30, "n_blocks": 1, "n_heads": 4, "cond_dim": 8})
    with pytest.raises(ValueError, match="unknown model size"):
        make_config(10, 8, "gigantic")


def test_ema_warmup_decay_and_swap():
    m = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, decay=0.9999)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)  # decay_1 = min(0.9999, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 1 - d))
    with ema.swapped_in(m):
        assert torch.allclose(m.weight, torch.full((1, 2), 1 - d))
    assert torch.allclose(m.weight, torch.ones(1, 2))
