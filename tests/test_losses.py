"""Loss identities for AR, MDLM (SUBS) and the uniform-state (UDLM / DUO base) NELBO."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlm.algos.mdlm import forward_mask, subs_log_probs
from dlm.algos.udlm import forward_uniform, udlm_nelbo


class FixedBackbone(torch.nn.Module):
    """Returns the same logits (L, K) for every input, recording the sigma it was given."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.sigmas = []

    def forward(self, x, sigma=None, **_):
        self.sigmas.append(sigma)
        return self.logits.expand(x.shape[0], *self.logits.shape).clone()


# --- MDLM ------------------------------------------------------------------------------------------

def test_subs_zero_mask_prob_and_carry_over():
    K, mask = 6, 1
    logits = torch.randn(2, 4, K)
    z = torch.tensor([[mask, 3, mask, 5], [2, mask, mask, 0]])
    lp = subs_log_probs(logits, z, mask)
    probs = lp.exp()
    assert torch.allclose(probs.sum(-1), torch.ones(2, 4))
    assert torch.all(probs[..., mask] < 1e-12)  # zero masking probability
    unmasked = z != mask
    assert torch.equal(probs[unmasked].argmax(-1), z[unmasked])  # carry-over
    assert torch.allclose(probs[unmasked].max(-1).values, torch.ones(int(unmasked.sum())))
    # masked rows are the softmax of the non-mask logits
    ref = logits.clone()
    ref[..., mask] = -math.inf
    assert torch.allclose(probs[~unmasked], torch.softmax(ref, -1)[~unmasked], atol=1e-6)


def test_mdlm_loss_is_ce_over_t_on_masked_tokens(module_factory):
    K, L = 12, 8
    m = module_factory("mdlm", vocab_size=K, block_length=L)
    logits = torch.randn(L, K)
    m.backbone = FixedBackbone(logits)
    x = torch.randint(2, K, (3, L))
    t = torch.tensor([0.2, 0.5, 0.9])
    torch.manual_seed(0)
    nll = m.token_nll({"input_ids": x}, t)
    torch.manual_seed(0)
    z = forward_mask(x, m.schedule.alpha(t), m.mask_id)
    ref_logits = logits.clone()
    ref_logits[:, m.mask_id] = -math.inf
    ce = -torch.log_softmax(ref_logits, -1)[torch.arange(L)[None], x]  # (3, L)
    expected = torch.where(z == m.mask_id, ce / t[:, None], torch.zeros_like(ce))  # weight 1/t (log-linear)
    assert torch.allclose(nll, expected, atol=1e-5)
    # no time conditioning by default for MDLM: sigma fed to the backbone is zero
    assert torch.all(m.backbone.sigmas[-1] == 0)


def test_forward_mask_rate():
    g = torch.Generator().manual_seed(0)
    x = torch.full((200, 500), 7)
    z = forward_mask(x, torch.full((200,), 0.3), mask_id=1, generator=g)
    assert abs((z == 1).float().mean().item() - 0.7) < 0.01
    assert set(z.unique().tolist()) == {1, 7}


# --- UDLM / DUO base ----------------------------------------------------------------------------

def brute_force_udlm(log_x, x, z, alpha, dalpha):
    """UDLM eq. 49 written as a plain loop over the vocabulary (the definition, no simplification)."""
    B, L, K = log_x.shape
    out = torch.zeros(B, L, dtype=torch.float64)
    for b in range(B):
        a = float(alpha[b])
        for l in range(L):
            xbar = K * a * F.one_hot(x[b, l], K).double() + (1 - a)
            xt = K * a * log_x[b, l].double().exp() + (1 - a)
            i = int(z[b, l])
            s = sum(xbar[j] / xbar[i] * math.log(xt[i] * xbar[j] / (xt[j] * xbar[i])) for j in range(K))
            out[b, l] = float(dalpha[b]) / (K * a) * (K / xbar[i] - K / xt[i] - s)
    return out


def random_case(K=9, B=4, L=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, K, (B, L), generator=g)
    z = torch.randint(0, K, (B, L), generator=g)
    z[:, :2] = x[:, :2]  # some positions where z = x
    alpha = torch.tensor([0.02, 0.3, 0.7, 0.99])[:B]
    dalpha = torch.full((B,), -0.999)
    log_x = torch.log_softmax(3 * torch.randn(B, L, K, generator=g), -1)
    return log_x, x, z, alpha, dalpha


def test_udlm_matches_definition():
    log_x, x, z, alpha, dalpha = random_case()
    fast = udlm_nelbo(log_x, x, z, alpha, dalpha).double()
    assert torch.allclose(fast, brute_force_udlm(log_x, x, z, alpha, dalpha), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_udlm_nonnegative(seed):
    log_x, x, z, alpha, dalpha = random_case(seed=seed)
    assert torch.all(udlm_nelbo(log_x, x, z, alpha, dalpha) >= -1e-6)


def test_udlm_zero_for_perfect_denoiser():
    log_x, x, z, alpha, dalpha = random_case(K=50)
    perfect = torch.log(F.one_hot(x, 50).double().clamp_min(1e-300))
    assert torch.allclose(udlm_nelbo(perfect, x, z, alpha, dalpha), torch.zeros_like(alpha[:, None]).expand(
        x.shape).float(), atol=1e-6)


def test_udlm_large_vocab_stable():
    log_x, x, z, alpha, dalpha = random_case(K=50258, B=2, L=3)
    out = udlm_nelbo(log_x, x, z, alpha[:2], dalpha[:2])
    assert torch.isfinite(out).all() and torch.all(out >= 0)


def test_forward_uniform_marginal():
    g = torch.Generator().manual_seed(0)
    K, a = 5, 0.4
    x = torch.full((400, 500), 2)
    z = forward_uniform(x, torch.full((400,), a), K, generator=g)
    freq = torch.bincount(z.flatten(), minlength=K).double() / z.numel()
    expected = torch.full((K,), (1 - a) / K, dtype=torch.float64)
    expected[2] += a
    assert torch.allclose(freq, expected, atol=5e-3)


# --- AR ---------------------------------------------------------------------------------------------

def test_ar_loss_is_next_token_ce_without_first_position(module_factory):
    m = module_factory("ar", vocab_size=20, block_length=10)
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randint(2, 20, (2, 10))
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    nll = m.token_nll(batch, torch.ones(2))
    logits = m.backbone(x[:, :-1]).float()
    logits[..., m.mask_id] = -math.inf
    ref = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
    assert torch.allclose(nll[:, 1:], ref, atol=1e-5)
    assert m.loss_mask(batch)[:, 0].sum() == 0 and m.loss_mask(batch)[:, 1:].all()
