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


def _keep_sorted(sorted_p: torch.Tensor, cum: torch.Tensor, p: float, rule: str) -> torch.Tensor:
    """The nucleus rule on descending values (..., k) and their running sums: which entries are kept."""
    keep = (cum - sorted_p) < p if rule == "keep_crossing" else cum <= p
    keep[..., 0] = True
    return keep


@dataclass
class NucleusStats:
    """The nucleus of each row of a (R, K) probability tensor, in four numbers per row (all (R,)):
    `thr` the smallest kept value (in the probabilities' dtype), `count` the nucleus size, `n_above` how many
    kept values exceed `thr` (the other count - n_above kept entries equal `thr`: ties, broken toward the
    lower id, as a stable sort), `mass` the kept mass (the running sum in descending order, in the sums'
    dtype: the renormaliser)."""

    thr: torch.Tensor
    count: torch.Tensor
    n_above: torch.Tensor
    mass: torch.Tensor

    def kept(self, probs: torch.Tensor) -> torch.Tensor:
        """Which entries of the rows `probs` (R, K) (the rows these statistics describe) are kept: (R, K) bool."""
        thr = self.thr[:, None].to(probs.dtype)
        out = probs >= thr  # (R, K): every tie kept, right unless a row keeps only some of its ties
        tie = probs == thr
        partial = (self.count - self.n_above) < tie.sum(-1)  # (R,) rows whose ties are split by the boundary
        if partial.any():
            rank = tie[partial].cumsum(-1) - 1  # each tie's place among its row's ties, lower ids first
            out[partial] = (probs[partial] > thr[partial]) | (tie[partial] & (
                rank < (self.count - self.n_above)[partial, None]))
        return out

    def kept_at(self, probs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Whether id ids[r] is kept in row r of `probs` (R, K): (R,) bool (a tie looks at its row)."""
        p = probs.gather(-1, ids[:, None]).squeeze(-1)  # (R,)
        thr = self.thr.to(probs.dtype)
        out = p > thr
        tie = p == thr
        if tie.any():
            rows = tie.nonzero().squeeze(-1)
            before = (probs[rows] == thr[rows, None]) & (torch.arange(probs.shape[-1], device=probs.device)
                                                         < ids[rows, None])  # tied ids below ids[r]
            out[rows] = before.sum(-1) < (self.count - self.n_above)[rows]
        return out


def nucleus_stats(probs: torch.Tensor, p: float, rule: str = "keep_crossing", first_k: int = 64,
                  sum_dtype: torch.dtype | None = None, max_elements: int = 1 << 24) -> NucleusStats:
    """`NucleusStats` of each row of `probs` (R, K), found by top-k pre-selection instead of a full sort.

    The nucleus is a prefix of the descending order, so the k largest values (`torch.topk`) decide it
    whenever the rule stops inside them; rows where it does not are redone with a larger k (16 k, or twice the
    size their remaining mass needs at most the k-th value per entry), and the flattest with a full sort. The
    values and their running sums (in `sum_dtype`, default the probabilities' dtype) are those of sorting
    the whole row, so the kept set, its size and its mass are the sort-based filter's (ties aside: the count
    is the same, and tied entries are kept lower ids first). float32 probabilities with float64 sums give
    exactly the decisions of a sort of their float64 copies, at half the memory traffic. Rows are processed in
    chunks of at most `max_elements` selected entries (bounded memory)."""
    R, K = probs.shape
    sum_dtype = sum_dtype or probs.dtype
    thr = torch.empty(R, dtype=probs.dtype, device=probs.device)
    count = torch.empty(R, dtype=torch.long, device=probs.device)
    n_above = torch.empty(R, dtype=torch.long, device=probs.device)
    mass = torch.empty(R, dtype=sum_dtype, device=probs.device)
    todo = torch.arange(R, device=probs.device)
    k = min(first_k, K)
    while todo.numel():
        unresolved, need = [], k
        for chunk in todo.split(max(1, max_elements // k)):
            rows_p = probs[chunk]
            vals = rows_p.topk(k, dim=-1).values if k < K else rows_p.sort(dim=-1, descending=True).values  # (c, k)
            vals_s = vals.to(sum_dtype)
            cum = vals_s.cumsum(-1)  # (c, k) running sums in descending order
            keep = _keep_sorted(vals_s, cum, p, rule)
            done = ~keep[:, -1] if k < K else torch.ones_like(keep[:, -1])
            c = keep.sum(-1)  # (c,) the nucleus is a prefix
            t = vals.gather(-1, (c - 1)[:, None]).squeeze(-1)
            rows = chunk[done]
            thr[rows], count[rows] = t[done], c[done]
            n_above[rows] = (vals > t[:, None]).sum(-1)[done]
            mass[rows] = cum.gather(-1, (c - 1)[:, None]).squeeze(-1)[done]
            unresolved.append(chunk[~done])
            if not done.all():  # every further value is <= the k-th: at least (p - mass) / v_k more are kept
                short = ((p - cum[~done, -1]) / vals_s[~done, -1].clamp_min(1e-300)).max()
                need = max(need, k + int(min(float(short), K)) + 1)
        todo = torch.cat(unresolved)
        k = max(16 * k, 2 * need)
        k = K if k > K // 8 else k  # selecting a large share of the row costs about a sort
    return NucleusStats(thr, count, n_above, mass)


def top_p_filter(probs: torch.Tensor, p: float, rule: str = "keep_crossing") -> torch.Tensor:
    """Nucleus filter (Holtzman et al. 2020) on probabilities (..., K), renormalised (float64 when probs is).

    In descending order the top entry is always kept. The two papers' rules differ in the entry whose
    cumulative mass first reaches p:
      "keep_crossing" (DUO code): keep every entry whose preceding mass is < p, i.e. the smallest prefix
                                   whose mass is >= p, including the token that crosses p;
      "drop_crossing" (ReMDM code): keep only the entries whose cumulative mass is <= p, i.e. the
                                   largest prefix whose mass is <= p, dropping the crossing token.
    Equal values are ordered lower id first (a stable sort). Computed by `nucleus_stats` (top-k
    pre-selection: the same kept set as sorting the whole row, at a fraction of the cost).
    """
    if p >= 1.0:
        return probs
    if rule not in NUCLEUS_RULES:
        raise ValueError(f"unknown nucleus_rule {rule!r}; expected one of {NUCLEUS_RULES}")
    flat = probs.reshape(-1, probs.shape[-1])  # (R, K)
    stats = nucleus_stats(flat, p, rule)
    out = torch.where(stats.kept(flat), flat, torch.zeros((), dtype=flat.dtype, device=flat.device))
    return (out / stats.mass[:, None].to(out.dtype)).reshape(probs.shape)


def top_p_filter_sorted(probs: torch.Tensor, p: float, rule: str = "keep_crossing") -> torch.Tensor:
    """`top_p_filter` written the plain way, a stable descending sort of every whole row: the reference the
    tests and bench/bench_nucleus.py compare the pre-selection with (and what the samplers did before)."""
    if p >= 1.0:
        return probs
    sorted_p, idx = probs.sort(dim=-1, descending=True, stable=True)
    keep = _keep_sorted(sorted_p, sorted_p.cumsum(-1), p, rule)
    out = torch.zeros_like(probs).scatter(-1, idx, sorted_p * keep)
    return out / out.sum(-1, keepdim=True)


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
        """Float64 probabilities (..., K) from log x_theta (..., K), nucleus-filtered: the filter of the float64
        copies of exp(log_p), with the kept set found on the values in log_p's dtype (`nucleus_stats`)."""
        if self.nucleus_p >= 1.0:
            return log_p.exp().double()
        if self.nucleus_rule not in NUCLEUS_RULES:
            raise ValueError(f"unknown nucleus_rule {self.nucleus_rule!r}; expected one of {NUCLEUS_RULES}")
        probs = log_p.exp().reshape(-1, log_p.shape[-1])  # (R, K) in log_p's dtype
        stats = nucleus_stats(probs, self.nucleus_p, self.nucleus_rule, sum_dtype=torch.float64)
        out = torch.where(stats.kept(probs), probs.double(), torch.zeros((), dtype=torch.float64, device=probs.device))
        return (out / stats.mass[:, None]).reshape(log_p.shape)

    def output(self, z: torch.Tensor, t) -> "DenoiserOutput":
        """x_theta at every position from one network call, evaluated lazily (see `DenoiserOutput`)."""
        return DenoiserOutput(self, self.log_probs(z, t))


class DenoiserOutput:
    """One call's x_theta (n, L, K), read where a sampler needs it: `at(ids)` the probabilities of given ids
    (n, L), `bounds(ids)` cheap bounds on them, `rows(mask)` whole float64 distributions (m, K) at some
    positions, `argmax()`. Only the positions asked for are exponentiated and copied to float64, also with a
    nucleus filter: its kept set and renormaliser (`nucleus_stats`) are computed for the rows read in full
    or exactly, never for the whole (n, L, K) tensor (the filtered values are those of `top_p_filter`)."""

    SLACK = 1e-6  # relative widening of the nucleus bounds: float32 exp may differ by an ulp between kernels

    def __init__(self, denoiser: Denoiser, log_p: torch.Tensor):
        self.denoiser, self.log_p = denoiser, log_p  # (n, L, K)
        self.nucleus = denoiser.nucleus_p < 1.0

    def _exact(self, flat: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Filtered x_theta[ids] (m,) float64 for the rows `flat` (m, K) of log_p."""
        probs = flat.exp()  # (m, K) in log_p's dtype, the values `Denoiser.filter` filters
        stats = nucleus_stats(probs, self.denoiser.nucleus_p, self.denoiser.nucleus_rule, sum_dtype=torch.float64)
        p_id = probs.gather(-1, ids[:, None]).squeeze(-1).double()
        return torch.where(stats.kept_at(probs, ids), p_id / stats.mass, torch.zeros_like(p_id))

    def refine(self, ids: torch.Tensor, where: torch.Tensor, first_k: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Tighter (lo, hi) (m,) float64 on the filtered x_theta[ids] at the positions `where` (n, L) bool, from
        two passes over their rows and no sort: the `first_k` largest values either decide the nucleus (then
        lo = hi, the exact value) or show that all of them are kept, bounding the kept mass Z within
        [max(p, their mass), p + the k-th value] (keep_crossing; drop_crossing: [their mass, p]); and the mass
        of the ids above ids[r] says whether ids[r] is kept (undecided, [0, hi], only when it lies within 1e-9
        of p or among ties at the boundary)."""
        q, rule = self.denoiser.nucleus_p, self.denoiser.nucleus_rule
        probs = self.log_p[where].exp()  # (m, K)
        ids = ids[where]
        p_id = probs.gather(-1, ids[:, None]).squeeze(-1)  # (m,)
        k = min(first_k, probs.shape[-1])
        vals = probs.topk(k, dim=-1).values.double()  # (m, k)
        cum = vals.cumsum(-1)
        keep = _keep_sorted(vals, cum, q, rule)
        resolved = ~keep[:, -1]
        above = torch.where(probs > p_id[:, None], probs, torch.zeros((), dtype=probs.dtype)).sum(-1, dtype=torch.float64)
        tied = torch.where(probs == p_id[:, None], probs, torch.zeros((), dtype=probs.dtype)).sum(-1, dtype=torch.float64)
        p_id = p_id.double()
        before_hi = above + tied - p_id  # the mass sorted before ids[r] lies in [above, before_hi]
        m = 1e-9
        if rule == "keep_crossing":
            z_lo, z_hi = torch.maximum(cum[:, -1], torch.full_like(p_id, q)), q + vals[:, -1]
            kept, dropped = before_hi < q - m, above >= q + m
        else:
            top = (above == 0) & (tied == p_id)  # the unique top entry, always kept
            z_lo, z_hi = cum[:, -1], torch.full_like(p_id, q)
            kept, dropped = (before_hi + p_id < q - m) | top, (above + p_id > q + m) & ~top
        lo = torch.where(kept, p_id / z_hi * (1 - self.SLACK), torch.zeros_like(p_id))
        hi = torch.where(dropped, torch.zeros_like(p_id), torch.clamp(p_id / z_lo * (1 + self.SLACK), max=1.0))
        if resolved.any():  # the nucleus lies within the first k: exact
            exact = self._exact(self.log_p[where][resolved], ids[resolved])
            lo[resolved], hi[resolved] = exact, exact
        return lo, hi

    def at(self, ids: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """x_theta[ids] (n, L) float64 for ids (n, L); with `where` (n, L) bool only there (0 elsewhere)."""
        if not self.nucleus:
            out = self.log_p.gather(-1, ids[..., None]).squeeze(-1).double().exp()
            return out if where is None else torch.where(where, out, torch.zeros_like(out))
        where = torch.ones_like(ids, dtype=torch.bool) if where is None else where
        out = torch.zeros(ids.shape, dtype=torch.float64, device=ids.device)
        if where.any():
            out[where] = self._exact(self.log_p[where], ids[where])
        return out

    def bounds(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi) (n, L) float64 with lo <= x_theta[ids] <= hi, from x_theta's value at ids alone (no pass
        over the vocabulary); lo == hi (the exact value) without a nucleus filter. With one, the filtered
        value is 0 or p / Z with Z the kept mass: keep_crossing keeps Z in [p_nucleus, 1] and surely keeps an
        id of probability > 1 - p_nucleus; drop_crossing keeps an id of probability > max(p_nucleus, 1/2) alone
        (value 1) and otherwise bounds nothing."""
        if not self.nucleus:
            v = self.at(ids)
            return v, v
        q, s = self.denoiser.nucleus_p, self.SLACK
        v = self.log_p.gather(-1, ids[..., None]).squeeze(-1).double().exp()  # (n, L) unfiltered
        if self.denoiser.nucleus_rule == "keep_crossing":
            lo = torch.where(v * (1 - s) > 1 - q, v * (1 - s), torch.zeros_like(v))
            return lo, torch.clamp(v / q * (1 + s), max=1.0)
        alone = v * (1 - s) > max(q, 0.5)  # the (unique) top entry, kept alone: exactly 1
        return alone.double(), torch.ones_like(v)

    def rows(self, mask: torch.Tensor) -> torch.Tensor:
        """x_theta (m, K) float64 at the positions of mask (n, L) bool, row-major."""
        return self.denoiser.filter(self.log_p[mask])

    def argmax(self) -> torch.Tensor:
        """argmax x_theta (n, L) (the nucleus filter always keeps the top entry)."""
        return self.log_p.argmax(-1)


Weights = tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor | int]]]


def _cumulative(w: Weights) -> list[torch.Tensor]:
    """Running sums of the components' weights (w_x, w_x + w_u, then each point mass): the last is the total."""
    w_x, w_u, points = w
    out = [w_x, w_x + w_u]
    for p, _ in points:
        out.append(out[-1] + p)
    return out


def _undecided(u: torch.Tensor, weights, lo: torch.Tensor, hi: torch.Tensor, margin: float = 1e-9) -> torch.Tensor:
    """Positions (n, L) bool whose component is not decided by the bounds lo <= x_z <= hi: the uniform u lies
    within (a margin far above rounding of) the range a threshold (running weight / total, monotone in x_z)
    sweeps as x_z goes from lo to hi."""
    out = torch.zeros_like(u, dtype=torch.bool)
    open_ = lo != hi
    if not open_.any():
        return out
    c_lo, c_hi = _cumulative(weights(lo)), _cumulative(weights(hi))
    for a, b in zip(c_lo[:-1], c_hi[:-1]):
        f_lo, f_hi = a / c_lo[-1], b / c_hi[-1]
        out |= (u >= torch.minimum(f_lo, f_hi) - margin) & (u <= torch.maximum(f_lo, f_hi) + margin)
    return out & open_


def draw_mixture(x: DenoiserOutput, z: torch.Tensor, weights, vocab_size: int,
                 generator: torch.Generator | None = None, exclude: int | None = None) -> torch.Tensor:
    """One draw per position from  w_x x_theta + w_u Uniform + sum_i w_i e_{id_i}, the form of every
    uniform-state reverse step (DUO posterior, Ψ-samplers, the final step, GIDD's posterior). `weights(x_z)`
    returns (w_x, w_u, [(w_i, id_i)]) (unnormalised (n, L) float64, each affine in x_z = x_theta[z], each
    component normalised; id_i an (n, L) tensor or one id); Uniform is over the K ids, or over the K - 1 ids
    other than `exclude`. Exact, in two stages: a float64 uniform picks the component, then a token is drawn
    from x_theta only at the positions that picked it.

    With a nucleus filter x_z needs the filter's kept set and mass in every row, a pass over the vocabulary;
    instead the component is first decided from bounds on x_z (`DenoiserOutput.bounds`, from x_z's own value):
    each threshold (running weight / total) is monotone in x_z, so where the uniform lies outside every
    threshold's range (with a margin far above rounding) the component is the one any x_z in the bounds gives.
    Where it is not, `DenoiserOutput.refine` tightens the bounds with two passes over those rows (no sort),
    and x_z is computed exactly only for the positions still open. The uniforms, the decisions and so the tokens are those of the exact
    computation. Draw order: component uniforms (n, L), x_theta tokens (row-major), uniform tokens."""
    u = torch.rand(z.shape, dtype=torch.float64, device=z.device, generator=generator)  # (n, L)
    lo, hi = x.bounds(z)
    undecided = _undecided(u, weights, lo, hi)
    if undecided.any():  # two passes over those rows' vocabulary: tighter bounds, exact where the top-k decides
        lo, hi = lo.clone(), hi.clone()
        lo[undecided], hi[undecided] = x.refine(z, undecided)
        undecided = _undecided(u, weights, lo, hi)
        if undecided.any():  # the few left: the exact filtered value
            lo[undecided] = x.at(z, undecided)[undecided]
    w_x, w_u, points = w = weights(lo)
    total = _cumulative(w)[-1]
    r = u * total  # (n, L)
    pick_x = r < w_x  # (n, L)
    pick_u = ~pick_x & (r < w_x + w_u)
    out = z.clone()
    lo_r = w_x + w_u
    for wp, ids in points:  # point masses: the positions whose r falls in [lo_r, lo_r + wp)
        hit = (r >= lo_r) & (r < lo_r + wp)
        out = torch.where(hit, ids, out)
        lo_r = lo_r + wp
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


class DenseDenoiserOutput(DenoiserOutput):
    """The reference for `DenoiserOutput` with a nucleus filter: x_theta filtered at every position when the
    output is made (`top_p_filter_sorted` over (n, L, K)), so every read is exact and the mixture draws never
    use bounds; what the samplers did before the lazy nucleus (tests and bench/bench_nucleus.py)."""

    def __init__(self, denoiser: Denoiser, log_p: torch.Tensor):
        super().__init__(denoiser, log_p)
        probs = log_p.exp().double()
        self.full = top_p_filter_sorted(probs, denoiser.nucleus_p, denoiser.nucleus_rule)  # (n, L, K)

    def at(self, ids: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        out = self.full.gather(-1, ids[..., None]).squeeze(-1)
        return out if where is None else torch.where(where, out, torch.zeros_like(out))

    def bounds(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.at(ids)
        return v, v

    def rows(self, mask: torch.Tensor) -> torch.Tensor:
        return self.full[mask]
