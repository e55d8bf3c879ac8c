"""SEDD on the uniform graph: the transition, the score entropy against its definition and the UDLM NELBO, the
analytic step against Bayes' rule, and the sampler's law (louaaron/Score-Entropy-Discrete-Diffusion `Uniform`)."""

import math

import pytest
import torch
from conftest import perturb

from dlm.algos.sedd import sedd_uniform_loss, uniform_log_score
from dlm.algos.udlm import forward_uniform, udlm_nelbo
from dlm.sampling import run_sampler
from dlm.sampling.sedd import uniform_step_weights


def marginal(p0: torch.Tensor, sigma: float) -> torch.Tensor:
    """p_sigma = p0 e^{sigma Q} for Q = (1/K) 1 1^T - I: alpha p0 + (1 - alpha)/K, alpha = e^{-sigma}."""
    a = math.exp(-sigma)
    return a * p0 + (1 - a) / p0.shape[-1]


def transition(K: int, sigma: float) -> torch.Tensor:
    """e^{sigma Q} (K, K), row y -> column z, by the matrix exponential of the rate matrix itself."""
    Q = torch.full((K, K), 1.0 / K, dtype=torch.float64) - torch.eye(K, dtype=torch.float64)
    return torch.linalg.matrix_exp(sigma * Q)


def test_transition_closed_form_and_forward_noise():
    K, sigma = 5, 0.8
    T = transition(K, sigma)
    a = math.exp(-sigma)
    assert torch.allclose(T, a * torch.eye(K, dtype=torch.float64) + (1 - a) / K, atol=1e-14)
    x = torch.full((1, 200_000), 2)
    z = forward_uniform(x, torch.tensor([a]), K, torch.Generator().manual_seed(0))
    assert (z == 2).double().mean().item() == pytest.approx(a + (1 - a) / K, abs=4e-3)


def _definition(log_s: torch.Tensor, x0: int, z: int, sigma: float, dsigma: float) -> float:
    """dsigma (1/K) sum_{y != z} [s_y - r_y log s_y + r_y (log r_y - 1)], r_y = p(y | x0) / p(z | x0), with
    p(. | x0) a row of the matrix exponential: the DWDSE written from its definition (SEDD eq. 10)."""
    K = log_s.shape[-1]
    row = transition(K, sigma)[x0]
    total = 0.0
    for y in range(K):
        if y == z:
            continue
        r = float(row[y] / row[z])
        s = math.exp(float(log_s[y]))
        total += s - r * float(log_s[y]) + r * (math.log(r) - 1)
    return dsigma * total / K


def test_loss_equals_its_definition_on_tiny_tensors():
    """K = 4, three tokens: z = x0, z != x0, and one whose scores are exactly the true ratios (loss 0)."""
    K, sigma, dsigma = 4, 0.9, 1.7
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(1, 3, K, generator=g, dtype=torch.float64)
    x0 = torch.tensor([[1, 3, 0]])
    z = torch.tensor([[1, 0, 2]])
    row = transition(K, sigma)[0]
    raw[0, 2] = torch.log(row / row[2])  # the true scores of a point mass on x0 = 0, seen from z = 2
    log_s = uniform_log_score(raw, z)
    loss = sedd_uniform_loss(log_s, x0, z, torch.tensor([sigma], dtype=torch.float64),
                             torch.tensor([dsigma], dtype=torch.float64))[0]
    for i in range(3):
        assert float(loss[i]) == pytest.approx(_definition(log_s[0, i], int(x0[0, i]), int(z[0, i]), sigma, dsigma),
                                               rel=1e-12, abs=1e-13)
    assert abs(float(loss[2])) < 1e-12 and (loss[:2] > 0).all()


def test_loss_with_denoiser_scores_is_the_udlm_nelbo():
    """With s_y = xbar_theta_y / xbar_theta_z the score entropy is the UDLM integrand (DUO's RB form), token by
    token, at large K (rounding of the near-cancelling terms) and small sigma."""
    g = torch.Generator().manual_seed(1)
    B, L, K = 3, 5, 2000
    log_x = torch.log_softmax(2 * torch.randn(B, L, K, generator=g, dtype=torch.float64), -1)
    x0 = torch.randint(0, K, (B, L), generator=g)
    t = torch.tensor([0.004, 0.3, 0.97], dtype=torch.float64)
    alpha, dalpha = 1 - (1 - 1e-3) * t, torch.full_like(t, -(1 - 1e-3))
    z = forward_uniform(x0, alpha, K, g)
    z[0, :2] = x0[0, :2]  # both cases present
    log_xbar = torch.logaddexp(torch.log(K * alpha)[:, None, None] + log_x, torch.log1p(-alpha)[:, None, None])
    log_s = log_xbar - log_xbar.gather(-1, z[..., None])
    sedd = sedd_uniform_loss(log_s, x0, z, -torch.log(alpha), -dalpha / alpha)
    udlm = udlm_nelbo(log_x, x0, z, alpha, dalpha).double()
    assert torch.allclose(sedd, udlm, rtol=1e-6, atol=1e-9)


def test_analytic_step_is_bayes_for_one_token_and_euler_is_its_first_order():
    """With the exact scores of p_t = p0 e^{sigma_t Q} the analytic step is the exact reverse transition
    p(z_s = y | z_t = z) = p_s(y) T_{y z}(dsigma) / p_t(z) (one token), and Euler agrees to O(dsigma^2)."""
    K = 6
    p0 = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.07, 0.03], dtype=torch.float64)
    s_t, s_s = 1.2, 0.5
    pt, ps = marginal(p0, s_t), marginal(p0, s_s)
    T = transition(K, s_t - s_s)
    for z in range(K):
        log_s = torch.log(pt / pt[z])[None, None]  # (1, 1, K)
        w = uniform_step_weights("analytic", log_s, torch.tensor([[z]]), torch.tensor(s_t - s_s))[0, 0]
        bayes = ps * T[:, z] / pt[z]
        assert torch.allclose(w, bayes, atol=1e-13) and w.sum().item() == pytest.approx(1.0, abs=1e-13)
        d = 1e-3
        exact = uniform_step_weights("analytic", log_s, torch.tensor([[z]]), torch.tensor(d))[0, 0]
        euler = uniform_step_weights("euler", log_s, torch.tensor([[z]]), torch.tensor(d), torch.tensor(d))[0, 0]
        assert (euler - exact).abs().max() < 5 * d * d


class TrueScores(torch.nn.Module):
    """The exact log scores of i.i.d. tokens with law p0 under the loglinear schedule: per position
    log p_t(y) - log p_t(z) (the uniform graph's raw output is the log score)."""

    def __init__(self, p0: torch.Tensor):
        super().__init__()
        self.p0 = p0

    def forward(self, z, sigma=None, **_):
        a = torch.exp(-sigma.double())[:, None, None]  # (n, 1, 1)
        log_pt = torch.log(a * self.p0 + (1 - a) / self.p0.shape[-1]).expand(*z.shape, -1)  # (n, L, K)
        return (log_pt - log_pt.gather(-1, z[..., None])).float()


@pytest.mark.parametrize("sampler", ["sedd_analytic", "sedd_euler"])
def test_sampler_with_true_scores_draws_the_data_law(module_factory, sampler):
    """i.i.d. tokens with law p0 and the true scores: the sampled tokens follow p0 (within 5 s.e.), the chain
    starts from the uniform limit, makes steps + 1 calls and keeps conditioned positions."""
    K = 8
    p0 = torch.tensor([0.3, 0.2, 0.15, 0.12, 0.1, 0.08, 0.04, 0.01], dtype=torch.float64)
    m = module_factory("sedd", vocab_size=K, block_length=16, graph="uniform").eval()
    m.backbone = TrueScores(p0)
    out = run_sampler(m, sampler, n=250, steps=24, generator=torch.Generator().manual_seed(0))
    assert out["nfe"] == 25
    freq = torch.bincount(out["tokens"].flatten(), minlength=K).double() / out["tokens"].numel()
    se = (p0 * (1 - p0) / out["tokens"].numel()).sqrt()
    assert ((freq - p0).abs() <= 5 * se + 0.01).all(), (freq, p0)


def test_uniform_sedd_trains_and_rejects_nucleus(module_factory):
    m = perturb(module_factory("sedd", vocab_size=30, block_length=12, graph="uniform"))
    assert m.hparams.graph == "uniform"
    m.train()
    x = torch.randint(0, 30, (4, 12), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    nll, n = m.nelbo(batch, torch.Generator().manual_seed(1))
    assert torch.isfinite(nll) and nll > 0 and n == 48
    nll.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())
    with pytest.raises(ValueError, match="nucleus"):
        run_sampler(m.eval(), "sedd_analytic", n=2, steps=2, generator=torch.Generator().manual_seed(0),
                    settings={"nucleus_p": 0.9})
    with pytest.raises(ValueError, match="graph"):
        module_factory("sedd", graph="other")
