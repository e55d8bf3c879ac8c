"""`dlm import`: every original checkpoint layout gives exactly the original logits; files that do not
fit are refused with the keys listed; unsafe pickles are refused without running anything.

Each source is written here from a tiny model of ours by the inverse of the documented mapping
(`ORIGINAL_NAMES` below, written independently of dlm.checkpoints.convert), in the file format of each
original code base. `original_forward` re-computes the original DiT from those original-named tensors
(the originals' math: LayerNorm then * weight, 'b s (three h d)' qkv, rotate_half rotary, gated
residuals), so the checks cover the layout semantics and not only the renaming.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import pickle
import sys
import types
import typing

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from dlm.algos import get_method, load_module
from dlm.checkpoints.convert import ImportMismatchError, import_checkpoint, read_source
from dlm.checkpoints.safe_load import UnsafeCheckpointError, load_file, to_plain

HIDDEN, N_BLOCKS, N_HEADS, COND, L = 32, 2, 4, 16, 12
HEAD_DIM = HIDDEN // N_HEADS

# the real module names of kuleshov-group/mdlm models/dit.py DIT (state_dict order, n_blocks = 2),
# read from the original code: vocab_embed, sigma_map, rotary_emb (persistent buffer), blocks, output_layer
MDLM_DIT_KEYS = (
    ["vocab_embed.embedding", "sigma_map.mlp.0.weight", "sigma_map.mlp.0.bias", "sigma_map.mlp.2.weight",
     "sigma_map.mlp.2.bias", "rotary_emb.inv_freq"]
    + [f"blocks.{i}.{n}" for i in range(2) for n in (
        "norm1.weight", "attn_qkv.weight", "attn_out.weight", "norm2.weight", "mlp.0.weight", "mlp.0.bias",
        "mlp.2.weight", "mlp.2.bias", "adaLN_modulation.weight", "adaLN_modulation.bias")]
    + ["output_layer.norm_final.weight", "output_layer.linear.weight", "output_layer.linear.bias",
       "output_layer.adaLN_modulation.weight", "output_layer.adaLN_modulation.bias"])

# ours -> original (the inverse of the mapping documented in dlm.checkpoints.convert)
ORIGINAL_NAMES = {"embedding": "vocab_embed.embedding", "final.norm.weight": "output_layer.norm_final.weight",
                  "final.linear.weight": "output_layer.linear.weight", "final.linear.bias": "output_layer.linear.bias",
                  "final.adaLN.weight": "output_layer.adaLN_modulation.weight",
                  "final.adaLN.bias": "output_layer.adaLN_modulation.bias"}
IN_BLOCK = {"qkv.weight": "attn_qkv.weight", "adaLN.weight": "adaLN_modulation.weight",
            "adaLN.bias": "adaLN_modulation.bias"}


def to_original(ours: dict, rotary: str | None = "inv_freq", length: int = L) -> dict:
    """Our backbone state dict -> the original DDiT naming and order, with the original rotary buffers."""
    out = collections.OrderedDict()
    for k, v in ours.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            name = f"blocks.{i}.{IN_BLOCK.get(rest, rest)}"
        else:
            name = ORIGINAL_NAMES.get(k, k)  # sigma_map.* keeps its name
        if name.startswith("blocks.0.") and rotary is not None and not any(n.startswith("rotary") for n in out):
            out.update(rotary_buffers(rotary, length))  # registered after sigma_map, before the blocks
        out[name] = v.clone()
    return out


def rotary_buffers(kind: str, length: int) -> dict:
    inv_freq = 1.0 / (10_000 ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM))
    if kind == "inv_freq":  # MDLM / DUO / SEDD Rotary
        return {"rotary_emb.inv_freq": inv_freq}
    freqs = torch.einsum("i,j->ij", torch.arange(length).float(), inv_freq)  # GIDD: cached (1, L, 3, 1, hd)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = emb.cos()[None, :, None, None, :].repeat(1, 1, 3, 1, 1)
    sin = emb.sin()[None, :, None, None, :].repeat(1, 1, 3, 1, 1)
    cos[:, :, 2].fill_(1.0)
    sin[:, :, 2].fill_(0.0)
    return {"rotary_emb.cos_cached": cos, "rotary_emb.sin_cached": sin}


def original_forward(sd: dict, ids: torch.Tensor, sigma: torch.Tensor | None, n_heads: int = N_HEADS) -> torch.Tensor:
    """The original DDiT forward (MDLM/DUO/SEDD/GIDD models, eval mode) over original-named tensors."""
    causal = "sigma_map.mlp.0.weight" not in sd
    x = sd["vocab_embed.embedding"][ids]  # (B, T, d)
    B, T, d = x.shape
    hd = d // n_heads

    def ln(h, w):
        return F.layer_norm(h.float(), [d]) * w[None, None, :]

    def lin(h, name, bias=True):
        return F.linear(h, sd[f"{name}.weight"], sd[f"{name}.bias"] if bias else None)

    c = None
    if not causal:
        half = 128
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32) / half)
        args = sigma[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        c = F.silu(lin(F.silu(lin(emb, "sigma_map.mlp.0")), "sigma_map.mlp.2"))  # (B, cond)
    inv = 1.0 / (10_000 ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.einsum("i,j->ij", torch.arange(T).float(), inv)
    cos, sin = torch.cat((ang, ang), -1).cos()[:, None], torch.cat((ang, ang), -1).sin()[:, None]  # (T, 1, hd)

    def rot(t):  # (B, T, H, hd): t * cos + rotate_half(t) * sin
        return t * cos + torch.cat((-t[..., hd // 2:], t[..., :hd // 2]), -1) * sin

    n_blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(n_blocks):
        p = f"blocks.{i}."
        h = ln(x, sd[p + "norm1.weight"])
        if not causal:
            sa, ca, ga, sm, cm, gm = lin(c, p + "adaLN_modulation")[:, None].chunk(6, dim=2)
            h = h * (1 + ca) + sa
        qkv = lin(h, p + "attn_qkv", bias=False).view(B, T, 3, n_heads, hd)  # 'b s (three h d)'
        q, k, v = rot(qkv[:, :, 0]), rot(qkv[:, :, 1]), qkv[:, :, 2]
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
        a = lin(a.transpose(1, 2).reshape(B, T, d), p + "attn_out", bias=False)
        x = x + (ga * a if not causal else a)
        h = ln(x, sd[p + "norm2.weight"])
        if not causal:
            h = h * (1 + cm) + sm
        m = lin(F.gelu(lin(h, p + "mlp.0"), approximate="tanh"), p + "mlp.2")
        x = x + (gm * m if not causal else m)
    h = ln(x, sd["output_layer.norm_final.weight"])
    if not causal:
        shift, scale = lin(c, "output_layer.adaLN_modulation")[:, None].chunk(2, dim=2)
        h = h * (1 + scale) + shift
    return lin(h, "output_layer.linear")


# --- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory):
    """A 24-token word-level tokenizer with <|endoftext|> (0) and [MASK] (1): K = 24, mask id 1."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<|endoftext|>", "[MASK]", "[UNK]"] + [f"w{i}" for i in range(21)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   mask_token="[MASK]", unk_token="[UNK]")
    out = tmp_path_factory.mktemp("tok") / "tiny"
    fast.save_pretrained(str(out))
    return out


K = 24
SPECIAL = {"bos": 0, "eos": 0, "pad": None, "mask": 1}


def reference(algo: str, vocab: int = K, seed: int = 0, **kw):
    """A tiny method of ours with random weights everywhere (the 'original' model of a test)."""
    torch.manual_seed(seed)
    m = get_method(algo)(vocab_size=vocab, block_length=L, special_ids=SPECIAL, tokenizer_dir="unused",
                         model={"size": {"hidden": HIDDEN, "n_blocks": N_BLOCKS, "n_heads": N_HEADS,
                                         "cond_dim": COND}, "dropout": 0.0}, **kw).eval()
    with torch.no_grad():
        for name, p in m.backbone.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() > 1 else 0.1) + (1.0 if "norm" in name else 0.0))
    return m


def perturbed(sd: dict, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [v + 0.05 * torch.randn(v.shape, generator=g) for v in sd.values()]


@contextlib.contextmanager
def fake_omegaconf():
    """Pickle-compatible stand-ins of OmegaConf's classes (real module and class names, real state layout:
    _metadata/_parent/_content, nodes with _val), since omegaconf is not installed here. Yields build(dict)."""
    saved = {k: sys.modules.get(k) for k in ("omegaconf", "omegaconf.dictconfig", "omegaconf.listconfig",
                                             "omegaconf.nodes", "omegaconf.base")}
    classes, modules = {}, {}
    for module, name in (("omegaconf.dictconfig", "DictConfig"), ("omegaconf.listconfig", "ListConfig"),
                         ("omegaconf.nodes", "AnyNode"), ("omegaconf.base", "ContainerMetadata"),
                         ("omegaconf.base", "Metadata")):
        mod = sys.modules[module] = modules.setdefault(module, types.ModuleType(module))
        classes[name] = type(name, (), {"__module__": module, "__qualname__": name})  # pickled as NEWOBJ + BUILD
        setattr(mod, name, classes[name])
    sys.modules["omegaconf"] = types.ModuleType("omegaconf")

    def new(name, **state):
        obj = classes[name].__new__(classes[name])
        obj.__dict__.update(state)
        return obj

    def meta(kind):
        return new(kind, ref_type=typing.Any, object_type=dict, optional=True, key=None, flags={},
                   resolver_cache=collections.defaultdict(dict), key_type=typing.Any, element_type=typing.Any)

    def build(value, parent=None):
        if isinstance(value, dict):
            node = new("DictConfig", _metadata=meta("ContainerMetadata"), _parent=parent)
            node._content = {k: build(v, node) for k, v in value.items()}
        elif isinstance(value, list):
            node = new("ListConfig", _metadata=meta("ContainerMetadata"), _parent=parent)
            node._content = [build(v, node) for v in value]
        else:
            node = new("AnyNode", _metadata=meta("Metadata"), _parent=parent, _val=value)
        return node

    try:
        yield build
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def write_lightning(path, orig: dict, run_config: dict, tok_dir, ema: list | None = None, extra: dict | None = None):
    """A Lightning checkpoint as the MDLM/DUO repos write it: backbone.* keys, EMA shadow list, the OmegaConf
    run config and the tokenizer object in hyper_parameters, optimizer and loop state."""
    from transformers import AutoTokenizer

    sd = collections.OrderedDict((f"backbone.{k}", v) for k, v in orig.items())
    sd.update(extra or {})
    first = next(v for k, v in orig.items() if not k.startswith("rotary"))
    with fake_omegaconf() as build:
        obj = {"epoch": 0, "global_step": 42, "pytorch-lightning_version": "2.2.1", "state_dict": sd,
               "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 0}}}},
               "optimizer_states": [{"state": {0: {"step": torch.tensor(42.0), "exp_avg": torch.zeros_like(first)}},
                                     "param_groups": [{"lr": 3e-4, "betas": (0.9, 0.999), "params": [0]}]}],
               "lr_schedulers": [{"base_lrs": [3e-4], "last_epoch": 42, "lr_lambdas": [{}]}],
               "hparams_name": "kwargs",
               "hyper_parameters": {"config": build(run_config),
                                    "tokenizer": AutoTokenizer.from_pretrained(str(tok_dir))},
               "sampler": {"random_state": torch.get_rng_state()}}
        if ema is not None:
            obj["ema"] = {"decay": 0.9999, "num_updates": 42, "shadow_params": ema}
        torch.save(obj, path)


def write_hf(folder, tensors: dict, config: dict | None, fmt: str = "safetensors"):
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    else:
        torch.save(dict(tensors), folder / "pytorch_model.bin")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def logits(method, x, sigma):
    with torch.no_grad():
        return method.backbone(x) if method.causal else method.backbone(x, sigma)


def check_same(imported, ref, orig_sd, seed=3):
    """The imported backbone equals the reference model bit for bit, and the original forward computed from the
    original-named tensors."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, ref.hparams.vocab_size, (3, L), generator=g)
    x[0, :4] = 1  # some [MASK]
    sigma = torch.rand(3, generator=g) * 3
    a = logits(imported, x, sigma)
    assert torch.equal(a, logits(ref, x, sigma))
    torch.testing.assert_close(a, original_forward(orig_sd, x, None if imported.causal else sigma),
                               rtol=0, atol=1e-5)


MDLM_RUN_CONFIG = {"mode": "train", "backbone": "dit", "parameterization": "subs", "time_conditioning": False, "T": 0,
                   "model": {"name": "tiny", "type": "ddit", "hidden_size": HIDDEN, "cond_dim": COND,
                             "length": L, "n_blocks": N_BLOCKS, "n_heads": N_HEADS, "scale_by_sigma": True,
                             "dropout": 0.1},
                   "noise": {"type": "loglinear"},
                   "loader": {"num_workers": "${eval:\"len(__import__('os').sched_getaffinity(0))\"}"},
                   "callbacks": ["checkpoint_every_n_steps"]}
DUO_RUN_CONFIG = {**MDLM_RUN_CONFIG, "algo": {"name": "duo_base", "backbone": "dit", "parameterization": "mean",
                                             "time_conditioning": True, "causal_attention": False, "T": 0},
                  "noise": {"type": "log-linear", "eps": 1e-3}}
for _key in ("backbone", "parameterization", "time_conditioning", "T"):
    DUO_RUN_CONFIG.pop(_key)


# --- the layouts -----------------------------------------------------------------------------------

def test_writer_uses_the_original_mdlm_names():
    ref = reference("mdlm")
    assert list(to_original(ref.backbone.state_dict())) == MDLM_DIT_KEYS


@pytest.mark.parametrize("layout", ["mdlm-lightning", "duo-lightning"])
def test_lightning_checkpoint_imports_the_ema(layout, tiny_tok, tmp_path):
    algo, cfg = ("mdlm", MDLM_RUN_CONFIG) if layout == "mdlm-lightning" else ("udlm", DUO_RUN_CONFIG)
    raw = reference(algo)
    orig = to_original(raw.backbone.state_dict())
    params = [k for k in orig if not k.startswith("rotary")]
    shadow = perturbed({k: orig[k] for k in params})  # EMA in parameter order, differs from the raw weights
    write_lightning(tmp_path / "src.ckpt", orig, cfg, tiny_tok, ema=shadow,
                    extra={"teacher.vocab_embed.embedding": torch.zeros(2, 2)} if algo == "udlm" else None)
    summary = import_checkpoint(tmp_path / "src.ckpt", algo, tmp_path / "out.ckpt", tokenizer=str(tiny_tok))
    assert summary["layout"] == layout and summary["weights"] == "ema"
    m = load_module(str(tmp_path / "out.ckpt"))
    ema_ref = reference(algo)
    ema_orig = dict(orig, **dict(zip(params, shadow)))
    ema_ref.backbone.load_state_dict({k: ema_orig[o] for k, o in zip(raw.backbone.state_dict(), params)})
    check_same(m, ema_ref, ema_orig)
    assert m.hparams.time_conditioning is (algo == "udlm")  # from the run config
    assert m.hparams.noise == {"schedule": "loglinear", "eps": 1e-3}
    assert m.hparams.block_length == L and m.global_step == 42
    assert m.hparams.model["size"] == {"hidden": HIDDEN, "n_blocks": N_BLOCKS, "n_heads": N_HEADS, "cond_dim": COND}
    assert m.hparams.tokenizer_dir == str(tmp_path / "out.tokenizer")
    assert m.hparams.vocab_size == K and m.mask_id == 1
    # --raw-weights: the stored weights instead of the EMA
    import_checkpoint(tmp_path / "src.ckpt", algo, tmp_path / "raw.ckpt", tokenizer=str(tiny_tok), use_ema=False)
    check_same(load_module(str(tmp_path / "raw.ckpt")), raw, orig)


def test_restricted_loader_reads_the_run_config_without_omegaconf(tiny_tok, tmp_path):
    orig = to_original(reference("mdlm").backbone.state_dict())
    write_lightning(tmp_path / "src.ckpt", orig, MDLM_RUN_CONFIG, tiny_tok)
    obj = load_file(tmp_path / "src.ckpt")
    assert to_plain(obj["hyper_parameters"]["config"]) == MDLM_RUN_CONFIG  # interpolation kept as a string
    assert "omegaconf" not in sys.modules
    assert "stand-in" in repr(obj["hyper_parameters"]["tokenizer"])
    assert torch.equal(obj["state_dict"]["backbone.vocab_embed.embedding"], orig["vocab_embed.embedding"])


def test_ar_lightning_checkpoint(tiny_tok, tmp_path):
    ref = reference("ar")
    orig = to_original(ref.backbone.state_dict())
    assert not any("sigma_map" in k or "adaLN" in k for k in orig)
    cfg = {**MDLM_RUN_CONFIG, "backbone": "ar", "parameterization": "ar", "model": {**MDLM_RUN_CONFIG["model"],
                                                                                   "causal": True}}
    write_lightning(tmp_path / "ar.ckpt", orig, cfg, tiny_tok)
    import_checkpoint(tmp_path / "ar.ckpt", "ar", tmp_path / "out.ckpt", tokenizer=str(tiny_tok))
    check_same(load_module(str(tmp_path / "out.ckpt")), ref, orig)
    with pytest.raises(ImportMismatchError, match="causal"):  # an AR model is no diffusion model
        import_checkpoint(tmp_path / "ar.ckpt", "mdlm", tmp_path / "bad.ckpt", tokenizer=str(tiny_tok))


@pytest.mark.parametrize("model_type", ["mdlm", "duo"])
def test_hf_mdlm_and_duo_folders(model_type, tiny_tok, tmp_path):
    algo = "mdlm" if model_type == "mdlm" else "udlm"
    ref = reference(algo)
    orig = to_original(ref.backbone.state_dict())
    config = {"model_type": model_type, "vocab_size": K, "model_length": L, "hidden_dim": HIDDEN, "cond_dim": COND,
              "n_blocks": N_BLOCKS, "n_heads": N_HEADS, "dropout": 0.1}
    config.update({"time_conditioning": False} if model_type == "mdlm" else {"causal": False, "var_min": True})
    folder = write_hf(tmp_path / model_type, {f"backbone.{k}": v for k, v in orig.items()}, config)
    summary = import_checkpoint(folder, algo, tmp_path / "out.ckpt", tokenizer=str(tiny_tok))
    assert summary["layout"] == f"{model_type}-hf" and summary["weights"] == "as stored"
    m = load_module(str(tmp_path / "out.ckpt"))
    check_same(m, ref, orig)
    assert m.hparams.time_conditioning is (model_type == "duo")
    assert m.hparams.model["dropout"] == 0.1


def test_duo_distilled_as_duo_algo(tiny_tok, tmp_path):
    ref = reference("duo")
    orig = to_original(ref.backbone.state_dict())
    folder = write_hf(tmp_path / "duo", {f"backbone.{k}": v for k, v in orig.items()},
                      {"model_type": "duo", "model_length": L, "n_heads": N_HEADS, "causal": False})
    import_checkpoint(folder / "model.safetensors", "duo", tmp_path / "out.ckpt", tokenizer=str(tiny_tok))
    check_same(load_module(str(tmp_path / "out.ckpt")), ref, orig)


def test_sedd_hub_mixin_folder(tiny_tok, tmp_path):
    from dlm.algos.sedd import absorb_log_score

    ref = reference("sedd")
    orig = to_original(ref.backbone.state_dict())
    config = {"model": {"name": "small", "type": "ddit", "hidden_size": HIDDEN, "cond_dim": COND, "length": L,
                        "n_blocks": N_BLOCKS, "n_heads": N_HEADS, "scale_by_sigma": True, "dropout": 0.1},
              "tokens": K - 1, "graph": {"type": "absorb"}, "noise": {"type": "loglinear"}}
    folder = write_hf(tmp_path / "sedd", orig, config, fmt="bin")
    summary = import_checkpoint(folder, "sedd", tmp_path / "out.ckpt", tokenizer=str(tiny_tok))
    assert summary["layout"] == "sedd-hf"
    m = load_module(str(tmp_path / "out.ckpt"))
    check_same(m, ref, orig)
    x = torch.randint(0, K, (2, L))
    t = torch.tensor([0.2, 0.7])
    with torch.no_grad():  # the score uses the SEDD output transformation on the same raw values
        expected = absorb_log_score(original_forward(orig, x, m.schedule.sigma(t)), x, m.schedule.sigma(t))
        torch.testing.assert_close(m.log_score(x, t), expected, rtol=0, atol=1e-5)
    config["graph"]["type"] = "uniform"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ImportMismatchError, match="absorbing"):
        import_checkpoint(folder, "sedd", tmp_path / "bad.ckpt", tokenizer=str(tiny_tok))


def test_sedd_run_checkpoint_with_ema(tiny_tok, tmp_path):
    raw = reference("sedd")
    orig = to_original(raw.backbone.state_dict())
    params = [k for k in orig if not k.startswith("rotary")]
    shadow = perturbed({k: orig[k] for k in params})
    run = tmp_path / "exp_local" / "openwebtext"  # SEDD's run dir: .hydra/config.yaml, checkpoints-meta/checkpoint.pth
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        f"tokens: {K - 1}\ngraph: {{type: absorb}}\nnoise: {{type: loglinear}}\nmodel:\n  hidden_size: {HIDDEN}\n"
        f"  n_heads: {N_HEADS}\n  n_blocks: {N_BLOCKS}\n  cond_dim: {COND}\n  length: {L}\n  scale_by_sigma: true\n")
    (run / "checkpoints-meta").mkdir()
    ckpt = run / "checkpoints-meta" / "checkpoint.pth"
    torch.save({"model": orig, "ema": {"decay": 0.9999, "num_updates": 5, "shadow_params": shadow}, "step": 5,
                "optimizer": {"state": {}, "param_groups": []}}, ckpt)
    summary = import_checkpoint(ckpt, "sedd", tmp_path / "out.ckpt", tokenizer=str(tiny_tok))
    assert summary["layout"] == "sedd-run" and summary["weights"] == "ema" and summary["global_step"] == 5
    ema_orig = dict(orig, **dict(zip(params, shadow)))
    ema_ref = reference("sedd")
    ema_ref.backbone.load_state_dict({k: ema_orig[o] for k, o in zip(raw.backbone.state_dict(), params)})
    check_same(load_module(str(tmp_path / "out.ckpt")), ema_ref, ema_orig)


def test_gidd_folder_with_its_tokenizer_and_p_uniform(tiny_tok, tmp_path):
    from transformers import AutoTokenizer

    ref = reference("gidd", p_uniform=0.1)
    orig = to_original(ref.backbone.state_dict(), rotary="cached", length=16)
    config = {"model_type": "dit", "vocab_size": K, "max_seq_len": 16, "hidden_size": HIDDEN,
              "timestep_cond_dim": COND, "num_hidden_layers": N_BLOCKS, "num_attention_heads": N_HEADS,
              "attention_dropout": 0.0, "p_uniform": 0.1, "t_eps": 1e-4}
    folder = write_hf(tmp_path / "gidd", orig, config)
    AutoTokenizer.from_pretrained(str(tiny_tok)).save_pretrained(str(folder))  # GIDD folders carry the tokenizer
    summary = import_checkpoint(folder, "gidd", tmp_path / "out.ckpt", length=L)  # tokenizer: the folder's
    assert summary["layout"] == "gidd-hf" and summary["tokenizer"] == str(folder)
    assert summary["rotary_cached_length"] == 16 and "rotary buffer" in summary["n_heads_from"]
    m = load_module(str(tmp_path / "out.ckpt"))
    check_same(m, ref, orig)
    assert m.hparams.p_uniform == 0.1 and m.hparams.t_eps == 1e-4 and m.hparams.time_conditioning is True
    assert m.hparams.model["dropout"] == 0.0 and m.hparams.block_length == L
    t = torch.tensor([0.3, 0.9])
    assert torch.equal(m.sigma_input(t), t)  # GIDD conditions on raw t, as the original DIT(input_ids, t)


def test_gidd_padded_vocabulary_is_cut(tiny_tok, tmp_path):
    padded = reference("gidd", vocab=128)  # v1.1 training: rows rounded up to a multiple of 128
    orig = to_original(padded.backbone.state_dict(), rotary=None)
    orig["logit_bias"] = torch.zeros(1, 1, 1)
    folder = write_hf(tmp_path / "gidd", orig, {"model_type": "dit", "max_seq_len": L, "num_attention_heads": N_HEADS})
    summary = import_checkpoint(folder, "gidd", tmp_path / "out.ckpt", tokenizer=str(tiny_tok))
    assert summary["truncated_vocab_rows"] == 128 - K
    m = load_module(str(tmp_path / "out.ckpt"))
    x = torch.randint(0, K, (2, L))
    t = torch.rand(2)
    assert torch.equal(logits(m, x, t), logits(padded, x, t)[..., :K])
    orig["logit_bias"] = torch.full((1, 1, 1), 0.5)
    write_hf(folder, orig, None)
    with pytest.raises(ImportMismatchError, match="logit_bias"):
        import_checkpoint(folder, "gidd", tmp_path / "bad.ckpt", tokenizer=str(tiny_tok))


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "pt"])
def test_bare_weight_files(fmt, tiny_tok, tmp_path):
    ref = reference("mdlm")
    orig = to_original(ref.backbone.state_dict(), rotary=None)
    path = tmp_path / f"weights.{fmt}"
    if fmt == "safetensors":
        save_file(dict(orig), str(path))
    else:
        torch.save({f"backbone.{k}": v for k, v in orig.items()}, path)
    with pytest.raises(ImportMismatchError, match="--n-heads"):  # nothing in the file gives the head count
        import_checkpoint(path, "mdlm", tmp_path / "out.ckpt", tokenizer=str(tiny_tok), length=L)
    with pytest.raises(ImportMismatchError, match="--length"):
        import_checkpoint(path, "mdlm", tmp_path / "out.ckpt", tokenizer=str(tiny_tok), n_heads=N_HEADS)
    summary = import_checkpoint(path, "mdlm", tmp_path / "out.ckpt", tokenizer=str(tiny_tok), length=L,
                                n_heads=N_HEADS)
    assert summary["layout"] == "weights" and summary["n_heads_from"] == ["--n-heads"]
    check_same(load_module(str(tmp_path / "out.ckpt")), ref, orig)


def test_dimensions_from_config_json(tiny_tok, tmp_path):
    """n_heads and L from config.json only (no rotary buffer): 4 heads; a wrong count gives other logits."""
    ref = reference("udlm")
    orig = to_original(ref.backbone.state_dict(), rotary=None)
    folder = write_hf(tmp_path / "duo", {f"backbone.{k}": v for k, v in orig.items()},
                      {"model_type": "duo", "n_heads": N_HEADS, "model_length": L, "hidden_dim": HIDDEN})
    summary = import_checkpoint(folder, "udlm", tmp_path / "out.ckpt", tokenizer=str(tiny_tok))
    assert summary["n_heads_from"] == ["config"]
    m = load_module(str(tmp_path / "out.ckpt"))
    assert m.hparams.model["size"]["n_heads"] == N_HEADS and m.hparams.block_length == L
    check_same(m, ref, orig)
    with pytest.raises(ImportMismatchError, match="disagrees"):
        import_checkpoint(folder, "udlm", tmp_path / "x.ckpt", tokenizer=str(tiny_tok), n_heads=2)
    (folder / "config.json").write_text(json.dumps({"model_type": "duo", "n_heads": N_HEADS, "hidden_dim": 64}))
    with pytest.raises(ImportMismatchError, match="hidden = 64"):
        import_checkpoint(folder, "udlm", tmp_path / "x.ckpt", tokenizer=str(tiny_tok), length=L)


def sdtt_config(length: int = L, large: bool = False) -> dict:
    """config.json of a jdeschena/sdtt revision: the run's whole OmegaConf config (PyTorchModelHubMixin)."""
    model = {"name": "small", "type": "ddit-orig", "hidden_size": HIDDEN, "cond_dim": COND, "length": length,
             "n_blocks": N_BLOCKS, "n_heads": N_HEADS, "scale_by_sigma": True, "dropout": 0.1,
             "tie_word_embeddings": False, **({"causal": True} if large else {})}  # dit-orig-large.yaml sets causal
    return {"mode": "train", "time_conditioning": False, "T": 0, "model": model,
            "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20}, "tokenizer": {"name": "gpt2"},
            "parameterization": {"name": "multi-round-sdtt", "checkpoint_path": "kuleshov-group/mdlm-owt",
                                 "start_from_hf": True, "distill_mode": "kl-bwd", "num_distill_steps": 2},
            "training": {"ema": 0.9999, "sampling_eps": 1e-5}}


@pytest.mark.parametrize("kind", ["student", "teacher_1M_sm"])
def test_sdtt_hub_revisions(kind, tiny_tok, tmp_path):
    """jdeschena/sdtt: students keep MDLM's DiT under 'backbone.' (and a causal key their DiT ignores); the
    teacher_1M_sm revision wraps the hub MDLM, so its keys carry 'backbone.' twice."""
    algo = "sdtt" if kind == "student" else "mdlm"
    ref = reference(algo)
    orig = to_original(ref.backbone.state_dict())
    prefix = "backbone." if kind == "student" else "backbone.backbone."
    folder = write_hf(tmp_path / "sdtt", {f"{prefix}{k}": v for k, v in orig.items()},
                      sdtt_config(large=kind == "student"))
    summary = import_checkpoint(folder, algo, tmp_path / "out.ckpt", tokenizer=str(tiny_tok))
    assert summary["layout"] == "sdtt-hf" and summary["weights"] == "as stored"
    m = load_module(str(tmp_path / "out.ckpt"))
    assert m.algo == algo and m.hparams.time_conditioning is False and m.hparams.block_length == L
    check_same(m, ref, orig)


def test_registry_expectations_are_checked(tiny_tok, tmp_path):
    """A file that is not the checkpoint the registry describes (another length, time conditioning or layout)
    is refused and nothing is written."""
    ref = reference("udlm")
    orig = to_original(ref.backbone.state_dict())
    folder = write_hf(tmp_path / "duo", {f"backbone.{k}": v for k, v in orig.items()},
                      {"model_type": "duo", "n_heads": N_HEADS, "model_length": L, "causal": False})
    good = {"layout": "duo-hf", "length": L, "time_conditioning": True}
    import_checkpoint(folder, "udlm", tmp_path / "ok.ckpt", tokenizer=str(tiny_tok), expects=good)
    with pytest.raises(ImportMismatchError, match=r"length 12 \(expected 1024\); layout 'duo-hf' \(expected 'mdlm-hf'\)"):
        import_checkpoint(folder, "udlm", tmp_path / "bad.ckpt", tokenizer=str(tiny_tok),
                          expects={"length": 1024, "layout": "mdlm-hf"})
    assert not (tmp_path / "bad.ckpt").exists() and not (tmp_path / "bad.tokenizer").exists()


def test_tokenizer_that_cannot_be_loaded_is_one_line_naming_tokenizer(tmp_path, capsys, monkeypatch):
    """Offline, the default tokenizer (gpt2, a hub name) cannot be loaded: one line naming --tokenizer, no
    transformers traceback, nothing written."""
    from dlm.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    orig = to_original(reference("mdlm").backbone.state_dict())
    torch.save({f"backbone.{k}": v for k, v in orig.items()}, tmp_path / "mdlm.pt")  # no folder: default gpt2
    assert main(["import", str(tmp_path / "mdlm.pt"), "--algo", "mdlm", "--out", str(tmp_path / "out.ckpt"),
                 "--n-heads", str(N_HEADS), "--length", str(L)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tokenizer" in err[0] and "'gpt2'" in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "out.ckpt").exists() and not (tmp_path / "out.tokenizer").exists()


# --- refusals ---------------------------------------------------------------------------------------

def test_wrong_file_lists_missing_unexpected_and_shapes(tiny_tok, tmp_path):
    orig = to_original(reference("mdlm").backbone.state_dict())
    orig.pop("blocks.1.attn_out.weight")
    orig["blocks.0.attn_proj.weight"] = orig.pop("blocks.0.attn_out.weight")
    orig["blocks.1.mlp.2.bias"] = torch.zeros(HIDDEN + 1)
    folder = write_hf(tmp_path / "bad", {f"backbone.{k}": v for k, v in orig.items()},
                      {"model_type": "mdlm", "n_heads": N_HEADS, "model_length": L})
    with pytest.raises(ImportMismatchError) as e:
        import_checkpoint(folder, "mdlm", tmp_path / "out.ckpt", tokenizer=str(tiny_tok))
    msg = str(e.value)
    assert "missing keys (2): blocks.0.attn_out.weight, blocks.1.attn_out.weight" in msg
    assert "unexpected keys (1): blocks.0.attn_proj.weight" in msg
    assert f"blocks.1.mlp.2.bias (ours blocks.1.mlp.2.bias): file ({HIDDEN + 1},) vs model ({HIDDEN},)" in msg
    assert not (tmp_path / "out.ckpt").exists()


def test_vocabulary_must_match_the_tokenizer(tiny_tok, tmp_path):
    orig = to_original(reference("mdlm", vocab=K + 3).backbone.state_dict())
    folder = write_hf(tmp_path / "m", {f"backbone.{k}": v for k, v in orig.items()},
                      {"model_type": "mdlm", "model_length": L})
    with pytest.raises(ImportMismatchError, match=f"{K + 3} vocabulary rows but the tokenizer gives K = {K}"):
        import_checkpoint(folder, "mdlm", tmp_path / "out.ckpt", tokenizer=str(tiny_tok))


class Payload:
    """Unpickling this runs a shell command (creates the marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("kind", ["torch.save .ckpt", "plain pickle .ckpt", "torch.save .pt", "unknown class"])
def test_malicious_pickle_is_refused_and_never_runs(kind, tiny_tok, tmp_path):
    marker = tmp_path / "pwned"
    orig = to_original(reference("mdlm").backbone.state_dict())
    payload = {"hyper_parameters": Payload(marker), "state_dict": {f"backbone.{k}": v for k, v in orig.items()}}
    path = tmp_path / ("src.pt" if kind.endswith(".pt") else "src.ckpt")
    if kind == "plain pickle .ckpt":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    elif kind == "unknown class":  # harmless, but neither a container nor a known data-only class: refused too
        payload["hyper_parameters"] = {"config": types.SimpleNamespace()}
        torch.save(payload, path)
    else:
        torch.save(payload, path)
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system|os\.system|types\.SimpleNamespace|nt\.system"):
        import_checkpoint(path, "mdlm", tmp_path / "out.ckpt", tokenizer=str(tiny_tok), n_heads=N_HEADS)
    assert not marker.exists()
    assert not (tmp_path / "out.ckpt").exists()
    with pytest.raises(UnsafeCheckpointError):
        read_source(path)
    assert not marker.exists()


def test_hub_name_that_cannot_be_fetched(tiny_tok, tmp_path, monkeypatch):
    from dlm.checkpoints.registry import CheckpointUnavailable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointUnavailable, match="cannot fetch nobody-here/no-such-dlm-model@main") as e:
        import_checkpoint("nobody-here/no-such-dlm-model", "mdlm", tmp_path / "out.ckpt", tokenizer=str(tiny_tok))
    assert "\n" not in str(e.value) and "hf download nobody-here/no-such-dlm-model" in str(e.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        import_checkpoint(str(tmp_path / "missing.ckpt"), "mdlm", tmp_path / "out.ckpt", tokenizer=str(tiny_tok))


# --- CLI and Snakemake script -----------------------------------------------------------------------

def test_cli_import_with_gpt2_then_sample(tmp_path, capsys):
    """GPT-2 vocabulary (K = 50258, [MASK] = 50257) through the CLI; the imported checkpoint samples and decodes."""
    from dlm.cli import main
    from dlm.data.tokenizer import write_offline_gpt2
    from dlm.sample import generate

    write_offline_gpt2(str(tmp_path / "gpt2src"))
    torch.manual_seed(0)
    ref = get_method("mdlm")(vocab_size=50258, block_length=8, special_ids={"bos": 50256, "eos": 50256, "pad": None,
                                                                             "mask": 50257},
                             tokenizer_dir="unused", model={"size": {"hidden": 16, "n_blocks": 1, "n_heads": 2,
                                                                     "cond_dim": 8}, "dropout": 0.0})
    with torch.no_grad():
        for p in ref.backbone.parameters():
            p.normal_(0, 0.2)
    orig = to_original(ref.backbone.state_dict(), rotary=None)
    folder = write_hf(tmp_path / "mdlm-owt", {f"backbone.{k}": v for k, v in orig.items()},
                      {"model_type": "mdlm", "vocab_size": 50258, "model_length": 8, "hidden_dim": 16, "cond_dim": 8,
                       "n_blocks": 1, "n_heads": 2, "dropout": 0.1, "time_conditioning": False})
    out = tmp_path / "models" / "final.ckpt"
    assert main(["import", str(folder), "--algo", "mdlm", "--out", str(out), "--tokenizer",
                 str(tmp_path / "gpt2src")]) == 0
    assert "mdlm-hf" in capsys.readouterr().out
    m = load_module(str(out))
    assert m.hparams.vocab_size == 50258 and m.mask_id == 50257 and m.hparams.special_ids["bos"] == 50256
    assert (tmp_path / "models" / "final.tokenizer" / "tokenizer.json").is_file()
    x = torch.randint(0, 50258, (2, 8))
    assert torch.equal(logits(m, x, torch.zeros(2)), logits(ref, x, torch.zeros(2)))
    generate(str(out), "mdlm_ancestral", 2, 0, 2, 2, str(tmp_path / "s.jsonl"), device="cpu")
    rows = [json.loads(r) for r in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(r["text"], str) and len(r["tokens"]) == 8 for r in rows)
    assert main(["import", str(folder), "--algo", "mdlm", "--out", str(tmp_path / "x.ckpt"), "--tokenizer",
                 str(tiny_tok_dir(tmp_path))]) == 2  # wrong tokenizer: K mismatch, reported as an error


def tiny_tok_dir(tmp_path):
    from transformers import AutoTokenizer

    src = tmp_path / "bert-like"
    if not src.exists():  # any tokenizer whose K is not 50258: the GPT-2 files without their merges suffice
        tok = AutoTokenizer.from_pretrained(str(tmp_path / "gpt2src"))
        tok.add_special_tokens({"pad_token": "[PAD]", "mask_token": "[MASK]"})
        tok.save_pretrained(str(src))
    return src


def test_snakemake_script(tiny_tok, tmp_path):
    import runpy

    ref = reference("udlm")
    orig = to_original(ref.backbone.state_dict())
    folder = write_hf(tmp_path / "duo", {f"backbone.{k}": v for k, v in orig.items()},
                      {"model_type": "duo", "n_heads": N_HEADS, "model_length": L, "causal": False})
    out = tmp_path / "results" / "models" / "duo_owt"
    snakemake = types.SimpleNamespace(
        input=types.SimpleNamespace(tokenizer=str(tiny_tok)),
        output=types.SimpleNamespace(ckpt=str(out / "final.ckpt"), tokenizer=str(out / "final.tokenizer")),
        params=types.SimpleNamespace(src=str(folder), algo="udlm", tokenizer=None, length=None, n_heads=None,
                                     algo_args={}),
        log=[str(tmp_path / "logs" / "import.log")], threads=2)
    stdout, stderr, handlers = sys.stdout, sys.stderr, logging.getLogger().handlers[:]
    try:
        runpy.run_module("dlm.scripts.import_ckpt", init_globals={"snakemake": snakemake}, run_name="__main__")
    finally:  # setup_job sent stdout, stderr and logging to the job's log file
        log_file = sys.stderr
        sys.stdout, sys.stderr = stdout, stderr
        logging.getLogger().handlers[:] = handlers
        log_file.close()
    m = load_module(str(out / "final.ckpt"))
    assert m.hparams.tokenizer_dir == str(out / "final.tokenizer")
    check_same(m, ref, orig)
    assert "imported" in (tmp_path / "logs" / "import.log").read_text()
