"""The UNet backbone of DUO's CIFAR-10 experiments (s-sahoo/duo models/unet.py, configs/model/unet.yaml), the
second backbone beside the DiT: pixels are tokens, but the network sees them as numbers.

Input: token ids (B, C*H*W) in (c, h, w) order, read as continuous values x / K * 2 - 1 in [-1, 1] (the original
centres with data_min_max = [0, K], K the method's vocabulary: 256 for DUO, 257 with [MASK] for MDLM, so a
masked pixel enters as the brightest value; we keep that). Time: sinusoidal features of 1000 sigma (D3PM /
tau-LDR style) -> Linear(ch, 4ch) -> SiLU -> Linear(4ch, 4ch); a class embedding (num_classes + 1 rows, the last
one "no class", for classifier-free guidance) is added to it.
Body (DDPM / score-SDE layout): conv3x3 -> per level `num_res_blocks` residual blocks (GroupNorm, SiLU, conv,
+ the projected time embedding, GroupNorm, SiLU, dropout, conv; (x + h)/sqrt 2 with `skip_rescale`), a
single-head self-attention block after each at level `attn_scale` (1: 16 x 16 on CIFAR), and a stride-2
downsampling between levels -> ResBlock, attention, ResBlock -> the mirror path with `num_res_blocks + 1`
blocks per level on the concatenated skips -> GroupNorm, SiLU, conv3x3 to 2C channels.
Output (the D3PM image parameterisation, Austin et al. 2021, arXiv 2107.03006 App. A.2): per pixel a logistic
with mean mu = tanh(x + h_mu) and log-scale h_s, inverse scale exp(2 - h_s), discretised into K equal bins
over [-1, 1]: logit_k = log(sigmoid(r_k) - sigmoid(l_k)), computed as a + log1p(-exp(b - a) + 1e-6) from the
log-sigmoids, exactly as the original (its `fix_logistic` variant, the smaller of the two tails' forms, is
the option `fix_logistic`). The mass outside [-1, 1] is dropped: the method's softmax renormalises, so the
distribution is the truncated logistic. Returns logits (B, C*H*W, K) in (c, h, w) order.
Deviations: the bin centres live on the input's device (the original hard-codes CUDA); attention uses torch's
scaled_dot_product_attention (the same softmax(q k^T / sqrt C) v).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class UNetConfig:
    vocab_size: int  # K output bins = input range (levels, + [MASK] for masked methods)
    channels: int = 3  # image channels C
    height: int = 32
    width: int = 32
    ch: int = 128  # base width
    ch_mult: tuple[int, ...] = field(default=(1, 2, 2, 2))  # width multiplier per level
    num_res_blocks: int = 2
    attn_scale: int = 1  # level index with self-attention (0 = full resolution)
    dropout: float = 0.1
    skip_rescale: bool = True  # residual sums divided by sqrt 2
    time_scale: float = 1000.0  # sigma is multiplied by this before the sinusoidal embedding
    num_classes: int | None = None  # class-conditional with this many classes (+1 "no class" row)
    fix_logistic: bool = False  # the original's option: min of the two tails' bin log-masses

    def __post_init__(self):
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        levels = len(self.ch_mult)
        if self.height % 2 ** (levels - 1) or self.width % 2 ** (levels - 1):
            raise ValueError(f"a {self.height}x{self.width} image cannot be halved {levels - 1} times "
                             f"(ch_mult {list(self.ch_mult)}); use fewer levels")
        if not 0 <= self.attn_scale < levels:
            raise ValueError(f"attn_scale {self.attn_scale} is not a level of ch_mult {list(self.ch_mult)}")
        widths = {self.ch * m for m in self.ch_mult} | {self.ch * (a + b) for a in (1, *self.ch_mult)
                                                        for b in self.ch_mult}  # block widths and skip concatenations
        bad = sorted(w for w in widths if w % min(w // 4, 32) or w < 4)
        if bad:
            raise ValueError(f"ch {self.ch} with ch_mult {list(self.ch_mult)} gives widths {bad} that GroupNorm's "
                             f"min(width // 4, 32) groups do not divide; use a multiple of 32 (e.g. 32, 64, 128)")


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=1e-6)


class NiN(nn.Module):
    """A 1x1 linear map over channels (B, C_in, H, W) -> (B, C_out, H, W), initialised as the score-SDE code:
    variance scaling, fan average, uniform, with `scale` (0 -> 1e-10: the attention output starts near zero)."""

    def __init__(self, c_in: int, c_out: int, scale: float = 0.1):
        super().__init__()
        scale = 1e-10 if scale == 0 else scale
        bound = math.sqrt(3 * scale / ((c_in + c_out) / 2))
        self.W = nn.Parameter(torch.empty(c_in, c_out).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bihw,io->bohw", x, self.W) + self.b[:, None, None]


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float, skip_rescale: bool):
        super().__init__()
        self.norm0, self.conv0 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb_dim, c_out)
        nn.init.zeros_(self.temb.bias)
        self.norm1, self.conv1 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = NiN(c_in, c_out) if c_in != c_out else None
        self.rescale = 1 / math.sqrt(2) if skip_rescale else 1.0

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, H, W); temb: (B, temb_dim)
        h = self.conv0(F.silu(self.norm0(x)))  # (B, C_out, H, W)
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv1(self.dropout(F.silu(self.norm1(h))))
        skip = x if self.skip is None else self.skip(x)
        return (skip + h) * self.rescale


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, residual."""

    def __init__(self, channels: int, skip_rescale: bool):
        super().__init__()
        self.norm = group_norm(channels)
        self.q, self.k, self.v = NiN(channels, channels), NiN(channels, channels), NiN(channels, channels)
        self.out = NiN(channels, channels, scale=0.0)
        self.rescale = 1 / math.sqrt(2) if skip_rescale else 1.0

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))  # (B, 1, HW, C)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C), scale 1/sqrt(C)
        y = y[:, 0].transpose(1, 2).reshape(B, C, H, W)
        return (x + self.out(y)) * self.rescale


class Stage(nn.Module):
    """A residual block, then attention where the level has it."""

    def __init__(self, res: ResBlock, attn: AttnBlock | None):
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.res(h, temb)
        return h if self.attn is None else self.attn(h)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """(B,) -> (B, dim): [sin(t w_i), cos(t w_i)] with w_i = max_period^(-i / (dim/2 - 1)) (score-SDE form)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) / (half - 1) * torch.arange(half, dtype=torch.float32, device=t.device))
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def discretized_logistic_logits(mu: torch.Tensor, log_scale: torch.Tensor, bins: int, fix: bool = False
                                ) -> torch.Tensor:
    """Log-mass of K = `bins` equal bins over [-1, 1] under Logistic(mu, exp(log_scale - 2)): (...) -> (..., K),
    not renormalised (the truncated part is dropped; a softmax renormalises)."""
    inv_scale = torch.exp(2.0 - log_scale)[..., None]  # (..., 1)
    width = 2.0 / bins
    centres = torch.linspace(-1 + width / 2, 1 - width / 2, bins, device=mu.device, dtype=mu.dtype)  # (K,)
    left = (centres - width / 2 - mu[..., None]) * inv_scale  # (..., K)
    right = (centres + width / 2 - mu[..., None]) * inv_scale
    log_cdf_left, log_cdf_right = F.logsigmoid(left), F.logsigmoid(right)

    def log_minus_exp(a, b):  # log(exp(a) - exp(b)) for b < a, with the original's 1e-6 guard
        return a + torch.log1p(-torch.exp(b - a) + 1e-6)

    logits = log_minus_exp(log_cdf_right, log_cdf_left)
    if fix:  # the same mass from the upper tails: log(sigmoid(-l) - sigmoid(-r))
        logits = torch.minimum(logits, log_minus_exp(log_cdf_left - left, log_cdf_right - right))
    return logits


class UNet(nn.Module):
    """forward(x ids (B, C*H*W), sigma (B,), labels (B,) or None) -> logits (B, C*H*W, K).

    `labels`: class ids, `num_classes` meaning "no class"; None uses `class_labels` (set by the method around
    a call, `dlm.algos.base.Method.class_conditioned`), and when that is None too, "no class".
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, temb_dim = cfg.ch, 4 * cfg.ch
        self.num_classes = cfg.num_classes
        self.class_labels: torch.Tensor | None = None  # set around calls by the method (not a parameter)
        self.temb = nn.Sequential(nn.Linear(ch, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        nn.init.zeros_(self.temb[0].bias)
        nn.init.zeros_(self.temb[2].bias)
        self.class_embedding = nn.Embedding(cfg.num_classes + 1, temb_dim) if cfg.num_classes else None
        self.input_conv = nn.Conv2d(cfg.channels, ch, 3, padding=1)

        def stage(c_in, c_out, level):
            res = ResBlock(c_in, c_out, temb_dim, cfg.dropout, cfg.skip_rescale)
            return Stage(res, AttnBlock(c_out, cfg.skip_rescale) if level == cfg.attn_scale else None)

        skips, c = [ch], ch
        self.down = nn.ModuleList()
        for level, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(stage(c, ch * mult, level))
                c = ch * mult
                skips.append(c)
            if level != len(cfg.ch_mult) - 1:
                self.down.append(Downsample(c))
                skips.append(c)
        self.middle = nn.ModuleList([Stage(ResBlock(c, c, temb_dim, cfg.dropout, cfg.skip_rescale),
                                           AttnBlock(c, cfg.skip_rescale)),
                                     Stage(ResBlock(c, c, temb_dim, cfg.dropout, cfg.skip_rescale), None)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(cfg.ch_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(stage(c + skips.pop(), ch * cfg.ch_mult[level], level))
                c = ch * cfg.ch_mult[level]
            if level != 0:
                self.up.append(Upsample(c))
        assert not skips
        self.out_norm = group_norm(c)
        self.out_conv = nn.Conv2d(c, 2 * cfg.channels, 3, padding=1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None, labels: torch.Tensor | None = None
                ) -> torch.Tensor:
        cfg = self.cfg
        B = x.shape[0]
        if x.dtype not in (torch.long, torch.int32, torch.int64):
            raise TypeError("the UNet takes pixel token ids (B, C*H*W), not relaxed inputs")
        if sigma is None:
            raise ValueError("the UNet needs sigma (zeros for no time conditioning)")
        img = x.view(B, cfg.channels, cfg.height, cfg.width).float() / cfg.vocab_size * 2 - 1  # (B, C, H, W)
        temb = self.temb(timestep_embedding(sigma * cfg.time_scale, cfg.ch))  # (B, 4ch)
        if self.class_embedding is not None:
            labels = self.class_labels if labels is None else labels
            if labels is None:
                labels = torch.full((B,), cfg.num_classes, dtype=torch.long, device=x.device)
            if labels.shape != (B,):
                raise ValueError(f"class labels have shape {tuple(labels.shape)}, expected ({B},)")
            temb = temb + self.class_embedding(labels)
        h = self.input_conv(img)  # (B, ch, H, W)
        hs = [h]
        for m in self.down:
            h = m(h, temb)
            hs.append(h)
        for m in self.middle:
            h = m(h, temb)
        for m in self.up:
            h = m(h) if isinstance(m, Upsample) else m(torch.cat([h, hs.pop()], dim=1), temb)
        h = self.out_conv(F.silu(self.out_norm(h)))  # (B, 2C, H, W)
        mu = torch.tanh(img + h[:, :cfg.channels])  # (B, C, H, W)
        logits = discretized_logistic_logits(mu, h[:, cfg.channels:], cfg.vocab_size, cfg.fix_logistic)
        return logits.reshape(B, cfg.channels * cfg.height * cfg.width, cfg.vocab_size)  # (c, h, w) order
