"""The DiT backbone of MDLM / SEDD / DUO and its causal variant for the AR baseline.

Architecture (MDLM arXiv 2406.07524 App. C; DUO arXiv 2506.10892 App. C; Peebles & Xie 2023):
token embedding (no position table) -> n_blocks x [pre-LN attention with rotary embeddings, pre-LN
4x MLP], each residual branch modulated by adaLN-Zero from the noise level sigma -> final LN with
adaLN shift/scale -> untied linear head (zero-initialised, so the initial output is uniform).
The causal variant (AR) drops the time conditioning: modulations are the identity, attention is
causal, and sampling can use a KV cache.

Attention is torch's scaled_dot_product_attention (flash kernels on GPU, plain math on CPU), or the
`flash-attn` package's kernel where it is installed and the inputs are half precision on CUDA.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # optional GPU extra (`pip install -e .[gpu]`); SDPA's own flash kernels are used otherwise
    from flash_attn import flash_attn_func
except ImportError:  # pragma: no cover - not installable on CPU machines
    flash_attn_func = None


@dataclass
class DiTConfig:
    vocab_size: int  # K, including [MASK] (the papers' 50258 for GPT-2)
    block_length: int = 1024  # sequence length L the rotary cache is built for
    hidden: int = 768  # model width d
    n_blocks: int = 12
    n_heads: int = 12  # head dim = hidden / n_heads (64 in the papers)
    cond_dim: int = 128  # width of the sigma embedding fed to adaLN
    dropout: float = 0.1  # on both residual branches, as in MDLM/DUO
    causal: bool = False  # True: AR transformer (no adaLN, causal attention)

    def __post_init__(self):
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by n_heads={self.n_heads}")
        if (self.hidden // self.n_heads) % 2:
            raise ValueError("head dimension must be even for rotary embeddings")


# Named sizes. `small`/`medium` are the papers' (MDLM/DUO configs/model); the rest fit a CPU.
PRESETS: dict[str, dict] = {
    "nano": dict(hidden=64, n_blocks=2, n_heads=2, cond_dim=32),
    "micro": dict(hidden=128, n_blocks=3, n_heads=4, cond_dim=64),
    "mini": dict(hidden=192, n_blocks=4, n_heads=6, cond_dim=64),
    "cpu": dict(hidden=256, n_blocks=5, n_heads=8, cond_dim=128),
    "tiny": dict(hidden=512, n_blocks=8, n_heads=8, cond_dim=128),
    "small": dict(hidden=768, n_blocks=12, n_heads=12, cond_dim=128),
    "medium": dict(hidden=1024, n_blocks=24, n_heads=16, cond_dim=128),
}


def make_config(vocab_size: int, block_length: int, size: str | dict, dropout: float = 0.1,
                causal: bool = False) -> DiTConfig:
    """A DiTConfig from a preset name or an explicit dict {hidden, n_blocks, n_heads, cond_dim}."""
    if isinstance(size, str):
        if size not in PRESETS:
            raise ValueError(f"unknown model size {size!r}; expected one of {sorted(PRESETS)} or a dict")
        size = PRESETS[size]
    return DiTConfig(vocab_size=vocab_size, block_length=block_length, dropout=dropout, causal=causal, **size)


# rotary embeddings ---------------------------------------------------------------------------------

class Rotary(nn.Module):
    """GPT-NeoX style (half-split) rotary embedding, base 10000 (Su et al. 2021)."""

    def __init__(self, head_dim: int, max_len: int, base: float = 10_000.0):
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)  # (hd/2,)
        pos = torch.arange(max_len).float()
        freqs = torch.outer(pos, inv_freq)  # (max_len, hd/2)
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        # x: (B, H, T, hd)
        T = x.shape[-2]
        if start + T > self.cos.shape[0]:
            raise ValueError(f"sequence length {start + T} exceeds the rotary cache ({self.cos.shape[0]})")
        cos = self.cos[start:start + T].to(x.dtype)  # (T, hd/2)
        sin = self.sin[start:start + T].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, hd/2) each
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


# conditioning --------------------------------------------------------------------------------------

class TimestepEmbedder(nn.Module):
    """sigma -> 256-dim sinusoidal features (max period 1e4) -> MLP -> cond_dim."""

    def __init__(self, cond_dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=sigma.device) / half)  # (half,)
        args = sigma.float()[:, None] * freqs[None]  # (B, half)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, freq_dim)
        return self.mlp(emb)  # (B, cond_dim)


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm computed in fp32 (as in MDLM/DUO), returned in x's dtype."""
    return F.layer_norm(x.float(), norm.normalized_shape, norm.weight.float(), None, norm.eps).to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # x: (B, L, d); shift, scale: (B, 1, d)
    return x * (1.0 + scale) + shift


# transformer block ---------------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, cfg: DiTConfig, rotary: Rotary):
        super().__init__()
        d = cfg.hidden
        self.cfg = cfg
        self.n_heads = cfg.n_heads
        self.rotary = rotary
        self.norm1 = nn.LayerNorm(d, bias=False)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.norm2 = nn.LayerNorm(d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))
        self.dropout = nn.Dropout(cfg.dropout)
        if not cfg.causal:  # adaLN-Zero: shift/scale/gate for attention and MLP
            self.adaLN = nn.Linear(cfg.cond_dim, 6 * d)
            nn.init.zeros_(self.adaLN.weight)
            nn.init.zeros_(self.adaLN.bias)

    def attention(self, x: torch.Tensor, cache: dict | None, start: int) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)  # (B, T, d) each
        q, k, v = (y.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2) for y in (q, k, v))  # (B, H, T, hd)
        q, k = self.rotary(q, start), self.rotary(k, start)
        if cache is not None:  # AR decoding: append this step's keys/values
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)  # (B, H, start+T, hd)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        # a single new query attends to the whole cached prefix; otherwise causal (AR) or full (diffusion)
        is_causal = self.cfg.causal and T > 1
        if is_causal and start > 0:
            raise ValueError("a multi-token chunk after a non-empty KV cache is not supported")
        if flash_attn_func is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and cache is None:
            y = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                causal=is_causal).transpose(1, 2)  # (B, H, T, hd)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)  # (B, H, T, hd)
        return self.attn_out(y.transpose(1, 2).reshape(B, T, d))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None, cache: dict | None = None,
                start: int = 0) -> torch.Tensor:
        if self.cfg.causal:
            x = x + self.dropout(self.attention(layer_norm(x, self.norm1), cache, start))
            return x + self.dropout(self.mlp(layer_norm(x, self.norm2)))
        mods = self.adaLN(c)[:, None, :].chunk(6, dim=-1)  # 6 x (B, 1, d)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mods
        h = modulate(layer_norm(x, self.norm1), shift_a, scale_a)
        x = x + gate_a * self.dropout(self.attention(h, cache, start))
        h = modulate(layer_norm(x, self.norm2), shift_m, scale_m)
        return x + gate_m * self.dropout(self.mlp(h))


class FinalLayer(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        self.norm = nn.LayerNorm(cfg.hidden, bias=False)
        self.linear = nn.Linear(cfg.hidden, cfg.vocab_size)  # untied output head
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        if not cfg.causal:
            self.adaLN = nn.Linear(cfg.cond_dim, 2 * cfg.hidden)
            nn.init.zeros_(self.adaLN.weight)
            nn.init.zeros_(self.adaLN.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        h = layer_norm(x, self.norm)
        if not self.cfg.causal:
            shift, scale = self.adaLN(c)[:, None, :].chunk(2, dim=-1)  # (B, 1, d) each
            h = modulate(h, shift, scale)
        return self.linear(h)  # (B, L, K)


# the model -----------------------------------------------------------------------------------------

class DiT(nn.Module):
    """forward(x, sigma) -> logits (B, L, K).

    x is either token ids (B, L) or, for relaxed inputs (DUO curriculum), weights over the
    vocabulary (B, L, K) that are multiplied into the embedding matrix, or, for the DUO++ top-k
    input, a tuple (ids (B, L, k), weights (B, L, k)) embedded as the weighted sum of k rows.
    """

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Parameter(torch.empty(cfg.vocab_size, cfg.hidden))  # (K, d)
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))
        self.rotary = Rotary(cfg.hidden // cfg.n_heads, cfg.block_length)
        self.sigma_map = None if cfg.causal else TimestepEmbedder(cfg.cond_dim)
        self.blocks = nn.ModuleList(Block(cfg, self.rotary) for _ in range(cfg.n_blocks))
        self.final = FinalLayer(cfg)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        if isinstance(x, tuple):  # DUO++ sparse soft input (Ch. II): sum_i weights_i E[ids_i]
            ids, weights = x  # (B, L, k) each
            B, L, k = ids.shape
            flat = F.embedding_bag(ids.reshape(B * L, k), self.embedding, mode="sum",
                                   per_sample_weights=weights.reshape(B * L, k).to(self.embedding.dtype))
            return flat.view(B, L, -1)  # (B*L, d) -> (B, L, d)
        if x.dtype in (torch.long, torch.int32, torch.int64):
            return F.embedding(x, self.embedding)  # (B, L, d)
        return x.to(self.embedding.dtype) @ self.embedding  # (B, L, K) @ (K, d) -> (B, L, d)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None, kv_cache: list[dict] | None = None,
                start: int = 0) -> torch.Tensor:
        h = self.embed(x)  # (B, L, d)
        c = None
        if not self.cfg.causal:
            if sigma is None:
                raise ValueError("the bidirectional DiT needs sigma (zeros for no time conditioning)")
            c = F.silu(self.sigma_map(sigma))  # (B, cond_dim)
        for i, block in enumerate(self.blocks):
            h = block(h, c, None if kv_cache is None else kv_cache[i], start)
        return self.final(h, c)  # (B, L, K)

    def new_cache(self) -> list[dict]:
        return [{} for _ in self.blocks]

    def config_dict(self) -> dict:
        return asdict(self.cfg)
