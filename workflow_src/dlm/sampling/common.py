"""Shared sampling primitives: float64 categorical draws, nucleus filtering, the time grid, the counted
denoiser and the conditioning (fixed positions) every sampler honours."""

from __future__ import annotations

from dataclasses import dataclass

import torch

NUCLEUS_RULES = ("keep_crossing", "drop_crossing")


def sample_categorical(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one id per row from unnormalised non-negative weights (..., K) -> (...).

    Inverse-CDF sampling in float64: one uniform per row against the float64 cumulative sum. This is
    exact up to float64 rounding, so, like the papers' float64 Gumbel-max, it does not truncate the
    tail (fp32 noise does, silently lowering the temperature; ReMDM, Wang et al. 2025, and Zheng et
    al. 2024), and it needs no transcendental function per vocabulary entry. Zero weights are never
    drawn.
    """
    cdf = weights.double().cumsum(dim=-1)  # (..., K)
    u = torch.rand((*cdf.shape[:-1], 1), dtype=torch.float64, device=cdf.device, generator=generator)
    idx = torch.searchsorted(cdf, u * cdf[..., -1:], right=True)  # first id whose cdf exceeds u * total
    return idx.squeeze(-1).clamp_max(cdf.shape[-1] - 1)


def top_p_filter(probs: torch.Tensor, p: float, rule: str = "keep_crossing") -> torch.Tensor:
    """Nucleus filter (Holtzman et al. 2020) on probabilities (..., K), renormalised.

    Sort descending; the top entry is always kept. The two papers' rules differ in the entry whose
    cumulative mass first reaches p:
      "keep_crossing" (DUO code): keep every entry whose preceding mass is < p, i.e. the smallest prefix
                                   whose mass is >= p, including the token that crosses p;
      "drop_crossing" (ReMDM code): keep only the entries whose cumulative mass is <= p, i.e. the
                                   largest prefix whose mass is <= p, dropping the crossing token.
    """
    if p >= 1.0:
        return probs
    if rule not in NUCLEUS_RULES:
        raise ValueError(f"unknown nucleus_rule {rule!r}; expected one of {NUCLEUS_RULES}")
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    cum = sorted_p.cumsum(-1)
    keep = (cum - sorted_p) < p if rule == "keep_crossing" else cum <= p
    keep[..., 0] = True
    filtered = torch.zeros_like(probs).scatter(-1, idx, sorted_p * keep)
    return filtered / filtered.sum(-1, keepdim=True)


def time_grid(steps: int, t_min: float = 1e-5, device: torch.device | str = "cpu") -> torch.Tensor:
    """The papers' sampling grid linspace(1, t_min, steps + 1) (MDLM/DUO `generate_samples`)."""
    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {steps}")
    return torch.linspace(1.0, t_min, steps + 1, dtype=torch.float64, device=device)


@dataclass
class Conditioning:
    """Positions whose tokens are given (a prompt prefix, a suffix, infilling spans): `values` (n, L) long,
    `fixed` (n, L) bool. Samplers start from `apply(prior)` and re-apply it after every update, so the
    conditioning tokens never change (the carry-over), whatever the sampler (remasking included)."""

    values: torch.Tensor  # (n, L)
    fixed: torch.Tensor  # (n, L) bool

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        return torch.where(self.fixed, self.values, z)

    @property
    def any(self) -> bool:
        return bool(self.fixed.any())

    @classmethod
    def none(cls, n: int, length: int, device: torch.device | str = "cpu") -> "Conditioning":
        return cls(torch.zeros(n, length, dtype=torch.long, device=device),
                   torch.zeros(n, length, dtype=torch.bool, device=device))

    @classmethod
    def from_rows(cls, rows: list[dict[int, int]], length: int, device: torch.device | str = "cpu"
                  ) -> "Conditioning":
        """From one {position: token id} dict per sequence."""
        c = cls.none(len(rows), length, device)
        for i, row in enumerate(rows):
            for pos, tok in row.items():
                if not 0 <= pos < length:
                    raise ValueError(f"conditioning position {pos} of sequence {i} is outside the block "
                                     f"(length {length})")
                c.values[i, pos], c.fixed[i, pos] = int(tok), True
        return c

    def to(self, device) -> "Conditioning":
        return Conditioning(self.values.to(device), self.fixed.to(device))


def conditioning_or_none(cond: Conditioning | None, n: int, length: int, device) -> Conditioning:
    if cond is None:
        return Conditioning.none(n, length, device)
    if tuple(cond.values.shape) != (n, length):
        raise ValueError(f"conditioning has shape {tuple(cond.values.shape)}, expected ({n}, {length})")
    return cond.to(device)


class Denoiser:
    """x_theta(z_t, t) of a diffusion module as float64 probabilities (nucleus-filtered with the chosen
    rule), counting network calls (NFE). t is a scalar shared by the batch. `rows` (n, L) bool asks for
    those positions only ((m, K), row-major), so the output transform, exp and float64 copy touch m rows:
    the masked samplers update a few positions per step and ask only for those."""

    def __init__(self, module, nucleus_p: float = 1.0, nucleus_rule: str = "keep_crossing"):
        self.module, self.nucleus_p, self.nucleus_rule, self.nfe = module, nucleus_p, nucleus_rule, 0

    def log_probs(self, z: torch.Tensor, t, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Unfiltered log x_theta (n, L, K), or (m, K) at `rows`, in the module's precision (one network call)."""
        self.nfe += getattr(self.module, "calls_per_denoise", 1)  # 2 under classifier-free guidance
        return self.module.denoise(z, torch.full((z.shape[0],), float(t), device=z.device), rows)

    def __call__(self, z: torch.Tensor, t, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Filtered float64 probabilities (n, L, K), or (m, K) at `rows`."""
        return self.filter(self.log_probs(z, t, rows))

    def filter(self, log_p: torch.Tensor) -> torch.Tensor:
        """Float64 probabilities (..., K) from log x_theta (..., K), nucleus-filtered."""
        return top_p_filter(log_p.exp().double(), self.nucleus_p, self.nucleus_rule)

    def output(self, z: torch.Tensor, t) -> "DenoiserOutput":
        """x_theta at every position from one network call, evaluated lazily (see `DenoiserOutput`)."""
        return DenoiserOutput(self, self.log_probs(z, t))


class DenoiserOutput:
    """One call's x_theta (n, L, K), read where a sampler needs it: `at(ids)` the probabilities of given ids
    (n, L), `rows(mask)` whole float64 distributions (m, K) at some positions, `argmax()`. Without a
    nucleus filter only the positions asked for are exponentiated and copied to float64; with one, the
    filtered (n, L, K) is built once (the filter needs whole rows)."""

    def __init__(self, denoiser: Denoiser, log_p: torch.Tensor):
        self.denoiser, self.log_p = denoiser, log_p  # (n, L, K)
        self.full = denoiser.filter(log_p) if denoiser.nucleus_p < 1.0 else None  # (n, L, K) float64

    def at(self, ids: torch.Tensor) -> torch.Tensor:
        """x_theta[ids] (n, L) float64 for ids (n, L)."""
        if self.full is not None:
            return self.full.gather(-1, ids[..., None]).squeeze(-1)
        return self.log_p.gather(-1, ids[..., None]).squeeze(-1).double().exp()

    def rows(self, mask: torch.Tensor) -> torch.Tensor:
        """x_theta (m, K) float64 at the positions of mask (n, L) bool, row-major."""
        if self.full is not None:
            return self.full[mask]
        return self.denoiser.filter(self.log_p[mask])

    def argmax(self) -> torch.Tensor:
        """argmax x_theta (n, L) (the nucleus filter always keeps the top entry)."""
        return self.log_p.argmax(-1)


def draw_mixture(x: DenoiserOutput, z: torch.Tensor, w_x: torch.Tensor, w_u: torch.Tensor,
                 points: list[tuple[torch.Tensor, torch.Tensor | int]], vocab_size: int,
                 generator: torch.Generator | None = None, exclude: int | None = None) -> torch.Tensor:
    """One draw per position from  w_x x_theta + w_u Uniform + sum_i w_i e_{id_i}  (unnormalised weights
    (n, L) float64, each component normalised; Uniform over the K ids, or over the K - 1 ids other than
    `exclude`; `points` = [(w_i, id_i)] with id_i an (n, L) tensor or one id): the form of every
    uniform-state reverse step (DUO posterior, Ψ-samplers, the final step, GIDD's posterior). Exact, in two
    stages: a float64 uniform picks the component, then a token is drawn from x_theta only at the positions
    that picked it (so x_theta is read in full only there). Draw order: component uniforms (n, L), x_theta
    tokens (row-major), uniform tokens."""
    u = torch.rand(z.shape, dtype=torch.float64, device=z.device, generator=generator)  # (n, L)
    total = w_x + w_u
    for w, _ in points:
        total = total + w
    r = u * total  # (n, L)
    pick_x = r < w_x  # (n, L)
    pick_u = ~pick_x & (r < w_x + w_u)
    out = z.clone()
    lo = w_x + w_u
    for w, ids in points:  # point masses: the positions whose r falls in [lo, lo + w)
        hit = (r >= lo) & (r < lo + w)
        out = torch.where(hit, ids, out)
        lo = lo + w
    if pick_x.any():
        out[pick_x] = sample_categorical(x.rows(pick_x), generator)
    if pick_u.any():
        m = int(pick_u.sum())
        if exclude is None:
            out[pick_u] = torch.randint(0, vocab_size, (m,), generator=generator, device=z.device)
        else:
            v = torch.randint(0, vocab_size - 1, (m,), generator=generator, device=z.device)
            out[pick_u] = v + (v >= exclude).long()  # skip the excluded id
    return out
