"""Ψ-samplers (DUO++, "The Diffusion Duality" Ch. II; brief /work/shared/reference/duo.md Sec. 6.4) for
uniform-state models (udlm / duo / dcd) and masked models (mdlm / sdtt).

One reverse step from t to s < t draws z_s from the mixture
    Ψ_{s|t} = κ q(z_s | z_t, x_theta) + (1 - κ) [α_s q_0 + (1 - α_s) π]                           (Ψ)
of the predictor (the ancestral posterior, DUO eq. 5 / MDLM eq. 7) and a predictor-corrector term that
jumps to the clean posterior q_0 (the same posterior with α_s := 1) and re-noises it to level s:
  uniform: q_0 ∝ x_theta ⊙ (K α_t e_z + 1 - α_t),   π = 1/K;
  masked:  q_0 = x_theta at [MASK] positions, one-hot of z elsewhere,   π = e_mask.
For a perfect denoiser both terms are the true q(z_s | z_t, x) resp. q_s(.|x) marginalised over z_t, so
every κ keeps the forward marginals. κ = 1 is the plain ancestral step (the DUO++ code's convention), κ = 0
pure predict-then-renoise. With κ = 1 everywhere (`modes` all "pure-posterior", `time_profile` "linear")
this sampler returns exactly the tokens of `duo_ancestral` (uniform) resp. `mdlm_ddpm` (masked) for the
same seed: κ = 1 steps run the very same code path and draw the same random numbers in the same order.

Settings (names of `dlm.config.SAMPLER_CATALOG["psi"]`):
  time_profile  "linear": the usual grid linspace(1, 1e-5, steps + 1).
                "linear-constant-linear" (the "ReMDM-loop"): with n = steps + 1 grid points and
                n_hi = round(high_frac n), n_mid = round(middle_frac n) (Python's round, i.e. banker's
                rounding, as the original), the grid is
                    linspace(1, t_c, n_hi) ++ [t_c] * n_mid ++ linspace(t_c, 1e-5, n - n_hi - n_mid),
                where α(t_c) = loop_alpha (the original's `linear-constant-linear-<c>-inv`). For the
                log-linear schedule t_c = 1 - loop_alpha as the original's `get_t_for_alpha` (which ignores
                the schedule's eps: α(t_c) = loop_alpha + eps (1 - loop_alpha)); for other schedules t_c is
                the exact inverse (bisection). The steps between equal grid points have dt = 0: there the
                predictor is the identity and only the corrector acts.
  modes         three segment modes [high, middle, low]; the kappa grid (one κ per grid point, κ[i] used for
                the step ts[i] -> ts[i+1]) is split into the same n_hi / n_mid / rest segments (whatever the
                time profile, as the original). Per segment:
                  "pure-posterior"  κ = 1;          "pure-pc"  κ = 0;
                  "constant"        κ = `kappa`;
                  ReMDM-style: σ from consecutive (α_t, α_s) inside the segment (ReMDM, Wang et al. 2025),
                  κ = clip(1 - σ / (1 - α_s), 0, 1) (the remasking probability of an unmasked token under Ψ
                  is (1 - κ)(1 - α_s) = σ), and the segment's last κ is 1:
                  "constant-remdm"  σ = eta;
                  "max-capped"      σ = min(eta, (1 - α_s) / α_t)   (σ = eta where α_t = 0);
                  "max-rescale"     σ = eta * min(eta, (1 - α_s) / α_t)   (σ = eta where α_t = 0) -- AS CODED
                                    in DUO++: ReMDM's definition is eta * min(1, .), which is much stronger;
                                    the published eta values were tuned with the coded formula, so we keep it.
                A mode may carry its own value as in the original's strings, e.g. "constant-0.95",
                "max-rescale-0.05", "constant-remdm-0.01"; it then overrides `kappa` / `eta` for that segment.
  eta, kappa    as above;  high_frac, middle_frac  the segment fractions;  loop_alpha  α of the loop.
  final         uniform models: "ancestral" (one more posterior step to α_s = 1,
                x ∝ x_theta ⊙ (K α_t e_z + 1 - α_t)) or "greedy" (Greedy-Tail, argmax x_theta), as `duo.py`.
                Masked models ignore it and use MDLM's noise removal (argmax x_theta where [MASK] remains),
                as `mdlm.py` (the original ran a sampled α_s = 1 posterior step there).

Deviations from the original (s-sahoo/duo `trainer_base.Diffusion._psi_update`), all distribution-preserving
or only where the original fails:
  * Steps with κ = 1 and dt = 0 (the two boundary steps of the loop segment) are exact identities; they are
    skipped (no network call, no random draw), so `nfe` counts real calls only (the original called the
    network there).
  * A ReMDM-style segment with a single grid point yields κ = [1] (the original produced no κ and failed
    its length check); n_mid is cut to n - n_hi if the rounded sizes overflow (the original failed).
  * Masked models: the mixture is drawn in two exact stages (like `mdlm.py`): one float64 uniform u per
    position decides whether a [MASK] unmasks (probability κ a + (1 - κ) α_s with a = (α_s - α_t)/(1 - α_t))
    or an unmasked token is remasked (probability (1 - κ)(1 - α_s)); unmasked tokens are drawn from x_theta.
  * Nucleus filtering is applied to x_theta (as `duo.py` / `mdlm.py`), float64 throughout.
  * With fewer than 2 points in the low segment (steps < ~32 with the default fractions) the loop grid ends
    at t_c, not 1e-5, and the final step starts from there -- as in the original (stated, not fixed).
"""

from __future__ import annotations

import torch

from dlm.sampling.common import Conditioning, Denoiser, conditioning_or_none, sample_categorical
from dlm.sampling.duo import final_step, uniform_posterior, uniform_step
from dlm.sampling.mdlm import noise_removal

MASKED_ALGOS = ("mdlm", "sdtt")
MODES = ("pure-posterior", "pure-pc", "constant", "constant-remdm", "max-capped", "max-rescale")
TIME_PROFILES = ("linear", "linear-constant-linear")
T_MIN = 1e-5  # the papers' last grid point


# --- time profile and kappa schedule -----------------------------------------------------------------

def segment_sizes(n: int, high_frac: float, middle_frac: float) -> tuple[int, int, int]:
    """(n_hi, n_mid, n_lo) for n grid points: round(high_frac n), round(middle_frac n) with Python's
    (banker's) rounding, and the rest (n_mid is cut so that n_lo >= 0)."""
    n_hi = min(round(high_frac * n), n)
    n_mid = min(round(middle_frac * n), n - n_hi)
    return n_hi, n_mid, n - n_hi - n_mid


def t_for_alpha(schedule, alpha: float) -> float:
    """t with alpha(t) = alpha: 1 - alpha for log-linear (as the original), else bisection on [0, 1]."""
    if getattr(schedule, "name", None) == "loglinear":
        return 1.0 - alpha
    lo, hi = 0.0, 1.0  # alpha decreases in t
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if float(schedule.alpha(torch.tensor(mid, dtype=torch.float64))) > alpha:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def psi_time_grid(schedule, steps: int, profile: str = "linear", loop_alpha: float = 0.9, high_frac: float = 0.45,
                  middle_frac: float = 0.5, device: torch.device | str = "cpu") -> torch.Tensor:
    """The steps + 1 decreasing grid points (float64) of the time profile (see the module docstring)."""
    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {steps}")
    n = steps + 1
    if profile == "linear":
        return torch.linspace(1.0, T_MIN, n, dtype=torch.float64, device=device)
    if profile != "linear-constant-linear":
        raise ValueError(f"unknown time_profile {profile!r}; expected one of {TIME_PROFILES}")
    t_c = t_for_alpha(schedule, loop_alpha)
    n_hi, n_mid, n_lo = segment_sizes(n, high_frac, middle_frac)
    f64 = dict(dtype=torch.float64, device=device)
    return torch.cat([torch.linspace(1.0, t_c, n_hi, **f64), torch.full((n_mid,), t_c, **f64),
                      torch.linspace(t_c, T_MIN, n_lo, **f64)])


def parse_mode(mode: str) -> tuple[str, float | None]:
    """'max-rescale' -> ('max-rescale', None); 'max-rescale-0.05' -> ('max-rescale', 0.05)."""
    if mode in MODES:
        return mode, None
    head, _, tail = mode.rpartition("-")
    try:
        value = float(tail)
    except ValueError:
        value = None
    if head not in MODES or head.startswith("pure-") or value is None:
        raise ValueError(f"unknown psi mode {mode!r}; expected one of {MODES}, optionally with a value "
                         f"suffix such as 'constant-0.95' or 'max-rescale-0.05'")
    return head, value


def segment_kappas(mode: str, alphas: torch.Tensor, eta: float, kappa: float) -> torch.Tensor:
    """κ (m,) float64 for a segment of m grid points with alphas (m,) (DUO++ `_mode_to_psi_kappas`)."""
    name, value = parse_mode(mode)
    m = len(alphas)
    if name == "pure-posterior":
        return torch.ones(m, dtype=torch.float64)
    if name == "pure-pc":
        return torch.zeros(m, dtype=torch.float64)
    if name == "constant":
        return torch.full((m,), kappa if value is None else value, dtype=torch.float64)
    e = eta if value is None else value
    if m == 0:
        return torch.zeros(0, dtype=torch.float64)
    a_t, a_s = alphas[:-1], alphas[1:]  # (m - 1,) consecutive pairs inside the segment
    cap = torch.minimum(torch.full_like(a_t, e), (1 - a_s) / a_t.clamp_min(1e-300))  # min(eta, (1 - a_s)/a_t)
    if name == "constant-remdm":
        sigma = torch.full_like(a_t, e)
    elif name == "max-capped":
        sigma = torch.where(a_t > 0, cap, torch.full_like(a_t, e))
    else:  # max-rescale, as coded: eta * min(eta, .)
        sigma = e * torch.where(a_t > 0, cap, torch.ones_like(a_t))
    room = 1 - a_s  # (m - 1,)
    k = torch.where(room > 0, (1 - sigma / room.clamp_min(1e-300)).clamp(0, 1), torch.ones_like(room))
    return torch.cat([k, torch.ones(1, dtype=torch.float64)])  # the segment's last κ is 1


def psi_kappas(ts: torch.Tensor, schedule, modes, eta: float = 0.01, kappa: float = 1.0, high_frac: float = 0.45,
               middle_frac: float = 0.5) -> torch.Tensor:
    """One κ per grid point (len(ts),) float64 on the CPU; κ[i] is used for the step ts[i] -> ts[i + 1]."""
    if len(modes) != 3:
        raise ValueError(f"psi needs three segment modes [high, middle, low], got {list(modes)}")
    n_hi, n_mid, _ = segment_sizes(len(ts), high_frac, middle_frac)
    alphas = schedule.alpha(ts.double().cpu())  # (n,)
    parts = (slice(0, n_hi), slice(n_hi, n_hi + n_mid), slice(n_hi + n_mid, len(ts)))
    kappas = torch.cat([segment_kappas(mode, alphas[part], eta, kappa) for mode, part in zip(modes, parts)])
    assert len(kappas) == len(ts)
    if not bool(((kappas >= 0) & (kappas <= 1)).all()):
        raise ValueError(f"psi kappas must lie in [0, 1]; modes {list(modes)} with kappa={kappa} give "
                         f"values in [{float(kappas.min())}, {float(kappas.max())}]")
    return kappas


# --- one Ψ step --------------------------------------------------------------------------------------

def uniform_psi_probs(probs: torch.Tensor, z: torch.Tensor, a_t: torch.Tensor, a_s: torch.Tensor,
                      kappa: float) -> torch.Tensor:
    """Ψ_{s|t} for a uniform-state model: probs (n, L, K) float64 x_theta, z (n, L); returns (n, L, K), normalised.

    Both the posterior numerator (`uniform_posterior`) and q_0's numerator x_theta ⊙ (K α_t e_z + 1 - α_t)
    sum to D = K α_t x_theta[z] + 1 - α_t, so
        Ψ = (κ post + (1 - κ) α_s q0) / D + (1 - κ)(1 - α_s) / K.
    """
    K = probs.shape[-1]
    at_z = probs.gather(-1, z[..., None])  # (n, L, 1)
    denom = K * a_t * at_z + (1 - a_t)  # (n, L, 1)
    q0 = (probs * (1 - a_t)).scatter_add_(-1, z[..., None], K * a_t * at_z)  # (n, L, K) unnormalised q_0
    mix = kappa * uniform_posterior(probs, z, a_t, a_s) + (1 - kappa) * a_s * q0
    return mix / denom + (1 - kappa) * (1 - a_s) / K


def masked_psi_rates(a_t: torch.Tensor, a_s: torch.Tensor, kappa: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(P(a [MASK] unmasks), P(an unmasked token is remasked)) of Ψ_{s|t} for a masked model.

    At [MASK]: κ [(α_s - α_t)/(1 - α_t) x + (1 - α_s)/(1 - α_t) m] + (1 - κ)[α_s x + (1 - α_s) m];
    at an unmasked token y: κ e_y + (1 - κ)[α_s e_y + (1 - α_s) m].
    """
    a = (a_s - a_t) / (1 - a_t)
    if kappa == 1.0:  # exactly the MDLM step (bit-identical rates)
        return a, torch.zeros_like(a)
    return kappa * a + (1 - kappa) * a_s, (1 - kappa) * (1 - a_s)


def _masked_step(z, t, a_t, a_s, kappa, x_theta, generator, cond, mask_id):
    """One two-stage Ψ step for a masked model (draw order as `mdlm.masked_steps`: u, then tokens)."""
    u = torch.rand(z.shape, dtype=torch.float64, device=z.device, generator=generator)  # (n, L)
    p_unmask, p_remask = masked_psi_rates(a_t, a_s, kappa)
    masked = z == mask_id  # (n, L)
    unmask = masked & (u < p_unmask) & ~cond.fixed
    remask = ~masked & (u < p_remask) & ~cond.fixed
    probs = x_theta(z, t, rows=unmask)  # (m, K); [MASK] has probability 0
    if unmask.any():
        z = z.masked_scatter(unmask, sample_categorical(probs, generator))
    return z.masked_fill(remask, mask_id)


# --- the sampler -------------------------------------------------------------------------------------

@torch.no_grad()
def sample_psi(module, n: int, steps: int, generator: torch.Generator, cond: Conditioning | None = None,
               nucleus_p: float = 1.0, nucleus_rule: str = "keep_crossing",
               modes=("pure-posterior", "constant-remdm", "pure-posterior"), eta: float = 0.01, kappa: float = 1.0,
               time_profile: str = "linear-constant-linear", loop_alpha: float = 0.9, high_frac: float = 0.45,
               middle_frac: float = 0.5, final: str = "ancestral", **_) -> dict:
    """Draw n sequences with the Ψ-sampler (module docstring). Returns {"tokens": (n, L), "nfe": int}."""
    if final not in ("ancestral", "greedy"):
        raise ValueError(f"final step must be 'ancestral' or 'greedy', got {final!r}")
    if not (0.0 <= high_frac <= 1.0 and 0.0 <= middle_frac <= 1.0 and high_frac + middle_frac <= 1.0):
        raise ValueError(f"need 0 <= high_frac, middle_frac and high_frac + middle_frac <= 1, "
                         f"got {high_frac}, {middle_frac}")
    if not 0.0 <= kappa <= 1.0:
        raise ValueError(f"kappa must be in [0, 1], got {kappa}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if not 0.0 < loop_alpha < 1.0:
        raise ValueError(f"loop_alpha must be in (0, 1), got {loop_alpha}")
    masked = module.algo in MASKED_ALGOS
    L, K = module.hparams.block_length, module.hparams.vocab_size
    device = module.device
    cond = conditioning_or_none(cond, n, L, device)
    ts = psi_time_grid(module.schedule, steps, time_profile, loop_alpha, high_frac, middle_frac, device)
    kappas = psi_kappas(ts, module.schedule, list(modes), eta, kappa, high_frac, middle_frac).tolist()
    x_theta = Denoiser(module, nucleus_p, nucleus_rule)

    if masked:
        z = cond.apply(torch.full((n, L), module.mask_id, dtype=torch.long, device=device))  # (n, L) all [MASK]
    else:
        z = cond.apply(torch.randint(0, K, (n, L), generator=generator, device=device))  # (n, L) uniform prior
    for i in range(steps):
        t, s, k = ts[i], ts[i + 1], kappas[i]
        if k == 1.0 and bool(t == s):
            continue  # dt = 0 and pure posterior: the identity
        a_t, a_s = module.schedule.alpha(t), module.schedule.alpha(s)
        if masked:
            z = _masked_step(z, t, a_t, a_s, k, x_theta, generator, cond, module.mask_id)
        else:  # k == 1: the ancestral step of duo.py, same draws
            z = uniform_step(x_theta.output(z, t), z, a_t, a_s, K, generator, k)
        z = cond.apply(z)

    if masked:
        z = noise_removal(z, module.mask_id, x_theta, ts[-1])
    else:
        z = final_step(x_theta.output(z, ts[-1]), z, module.schedule.alpha(ts[-1]), K, final, generator)
    return {"tokens": cond.apply(z), "nfe": x_theta.nfe}
