"""`dlm import`: released checkpoints of the original MDLM, DUO, SEDD and GIDD code as dlm checkpoints.

    import_checkpoint(src, algo, out, tokenizer=None, length=None, n_heads=None)

`src` is a checkpoint file (.ckpt, .safetensors, .bin, .pt, .pth), a Hugging Face model folder
(config.json + weights) or a hub name (fetched with huggingface_hub.snapshot_download). The result is a
checkpoint that `dlm.algos.load_module` restores: hyper_parameters.method (the method's constructor
arguments), state_dict ('method.backbone.*'), global_step, plus 'imported_from' (what was read and how).
The tokenizer given by `tokenizer` (default: the one in the source folder, else "gpt2") is saved by
`dlm.data.tokenizer.save_pretrained_tokenizer` next to the output (OUT with suffix .tokenizer) and its
special ids (GPT-2: K = 50258, [MASK] = 50257) must match the checkpoint's vocabulary.

Files are read without a general unpickle (`dlm.checkpoints.safe_load`).

Layouts (module names as in the original code; <name> is the DDiT naming of the table below)
------------------------------------------------------------------------------------------------
mdlm-lightning  Lightning .ckpt of kuleshov-group/mdlm (diffusion.py `Diffusion`; models/dit.py `DIT`, or
                models/autoregressive.py `AR` for the AR baseline). state_dict keys 'backbone.<name>'. EMA:
                checkpoint['ema'] = {'decay', 'num_updates', 'shadow_params': list of tensors in the order of
                itertools.chain(backbone.parameters(), noise.parameters())} (the log-linear noise has no
                parameters), i.e. the file order of the 'backbone.*' parameter keys (buffers skipped).
                Config: hyper_parameters['config'] (OmegaConf): model.{hidden_size, n_blocks, n_heads, cond_dim,
                length, dropout}, time_conditioning, noise.type; hyper_parameters['tokenizer'] is a pickled
                tokenizer object (read as an inert stand-in, not used).
duo-lightning   Lightning .ckpt of s-sahoo/duo (trainer_base.py `TrainerBase`; models/dit.py `DIT`, causal for AR):
                as above, EMA via `_get_parameters()` = backbone then noise parameters; config algo.{name,
                time_conditioning, causal_attention}, noise.{type: log-linear | cosine, eps}. Distillation
                checkpoints may carry 'teacher.*' keys: ignored.
mdlm-hf         kuleshov-group/mdlm-owt (modeling_mdlm.py: `MDLM(PreTrainedModel).backbone = DITBackbone`, same
                module names as `DIT`): keys 'backbone.<name>'; config.json (model_type mdlm): vocab_size,
                model_length, hidden_dim, cond_dim, n_blocks, n_heads, dropout, time_conditioning.
duo-hf          s-sahoo/duo, s-sahoo/duo-distilled (`DUO(PreTrainedModel).backbone = HFDIT`): keys
                'backbone.<name>'; config.json (model_type duo): vocab_size, model_length, hidden_dim, cond_dim,
                n_blocks, n_heads, dropout, causal. No time_conditioning key (DUO is time-conditioned). Both the
                base and the distilled model are sampled and evaluated as algo udlm.
sedd-hf         louaaron/sedd-{small,medium} (model/transformer.py `SEDD`, PyTorchModelHubMixin): keys '<name>'
                without prefix; config.json is the training config: model.{hidden_size, n_blocks, n_heads,
                cond_dim, length, dropout, scale_by_sigma}, tokens (50257; K = tokens + 1 for the absorbing graph,
                [MASK] last), graph.type, noise.type. SEDD's own run checkpoint (checkpoints-meta/checkpoint.pth:
                {'model': state_dict, 'ema': {'shadow_params'}, 'step'}) is read too (layout sedd-run), with
                its run's .hydra/config.yaml (yaml.safe_load) when it sits in the run directory.
sdtt-hf         jdeschena/sdtt revisions (src/sdtt/core/distill/multi_round_sdtt.py `MultiRoundSDTT`, pushed with
                PyTorchModelHubMixin): model.safetensors keys 'backbone.<name>' (models/dit_orig.py `DIT`, the MDLM
                DiT), or 'backbone.backbone.<name>' for teacher_1M_sm (the hub MDLM inside SDTT); config.json is
                the run's whole config (model.{hidden_size, n_blocks, n_heads, cond_dim, length, dropout},
                time_conditioning, noise.type, parameterization.name multi-round-sdtt). Its model.causal key
                (set in dit-orig-large.yaml) is not read by that DiT, whose attention is bidirectional: ignored.
gidd-hf         dvruette/gidd-* (gidd/models/modeling_dit.py `DIT(PreTrainedModel)`): keys '<name>' without prefix
                plus the persistent rotary buffers rotary_emb.{cos_cached, sin_cached} (1, max_seq_len, 3, 1,
                head_dim); config.json (model_type dit): vocab_size, max_seq_len, hidden_size, timestep_cond_dim,
                num_hidden_layers, num_attention_heads, attention_dropout, p_uniform, t_eps; the tokenizer is
                saved in the same folder (used by default). p_uniform and t_eps become the gidd algo's arguments.
weights         a bare state dict (.safetensors/.bin/.pt) in the naming above, with or without the 'backbone.'
                (or DDP 'module.') prefix; a config.json next to the file is read when present.

Name mapping (the same in every layout; i = block index, d = hidden, K = vocabulary, c = cond_dim)
------------------------------------------------------------------------------------------------
original <name>                          ours                         shape
vocab_embed.embedding                    embedding                    (K, d)
sigma_map.mlp.{0,2}.{weight,bias}        sigma_map.mlp.{0,2}.*        (c, 256) (c,) (c, c) (c,)
blocks.i.norm1.weight                    blocks.i.norm1.weight        (d,)
blocks.i.attn_qkv.weight                 blocks.i.qkv.weight          (3d, d)
blocks.i.attn_out.weight                 blocks.i.attn_out.weight     (d, d)
blocks.i.norm2.weight                    blocks.i.norm2.weight        (d,)
blocks.i.mlp.{0,2}.{weight,bias}         blocks.i.mlp.{0,2}.*         (4d, d) (4d,) (d, 4d) (d,)
blocks.i.adaLN_modulation.{weight,bias}  blocks.i.adaLN.*             (6d, c) (6d,)
output_layer.norm_final.weight           final.norm.weight            (d,)
output_layer.linear.{weight,bias}        final.linear.*               (K, d) (K,)
output_layer.adaLN_modulation.*          final.adaLN.*                (2d, c) (2d,)
rotary_emb.inv_freq                      -- checked (base 10000; gives head_dim = 2 len), dropped
rotary_emb.{cos,sin}_cached (GIDD)       -- checked (half-split, v untouched; gives head_dim), dropped
logit_bias (GIDD training DIT only)      -- dropped when 0; refused otherwise (a constant added to the
                                            logit of the input token has no counterpart in our DiT)
The causal AR models (MDLM models/autoregressive.py, DUO's causal DIT) have the same names without sigma_map
and adaLN_modulation.

No tensor is permuted or reshaped, because the computations line up one to one: qkv rows are [q | k | v],
each head-major ('b s (three h d)' in the originals, split(d) then view(h, hd) in ours); rotary embeddings
are GPT-NeoX half-split with base 10000 on q and k only (flash-attn's apply_rotary_emb_qkv_ with
interleaved=False, and the rotate_half fallbacks of SEDD/GIDD); the adaLN chunks are (shift, scale, gate)
for attention then MLP, and (shift, scale) in the final layer; LayerNorms have a weight and no bias and run
in fp32; c = silu(sigma_map(sigma)) with cos-then-sin 256-dim features. What the originals do around the
backbone is the method's business, not the mapping's: SEDD's `scale_by_sigma` shift and the zero at the
input token (algos/sedd.py absorb_log_score), GIDD's conditioning on raw t (algos/gidd.py sigma_input),
the AR baseline's [MASK] logit.

Vocabulary: K comes from the weights and must equal the tokenizer's (len(tok), +1 when it has no mask
token). Rows beyond the tokenizer's K are cut only when they are padding to a multiple of 128 (GIDD v1.1
training checkpoints); the cut is recorded in imported_from.truncated_vocab_rows.

EMA: where a checkpoint stores EMA weights (Lightning 'ema', SEDD run 'ema'), they become the imported
weights (the papers evaluate and sample with the EMA); the raw weights are dropped and no separate `ema`
entry is written, so load_module gives the same model with ema=True or False. use_ema=False imports the
raw weights instead.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlm.checkpoints.safe_load import load_file, to_plain

log = logging.getLogger("dlm.import")

ALGOS = ("mdlm", "udlm", "duo", "sedd", "gidd", "ar", "d3pm", "dcd", "sdtt")  # dcd / sdtt: distilled students
LAYOUTS = ("mdlm-lightning", "duo-lightning", "mdlm-hf", "duo-hf", "sedd-hf", "sedd-run", "sdtt-hf", "gidd-hf",
           "weights")
DEFAULT_TOKENIZER = "gpt2"
ROTARY_BASE = 10_000.0
FREQ_DIM = 256  # sinusoidal features of the sigma embedding (fixed in every original and in our DiT)

# original name -> ours, outside the blocks
TOP_LEVEL = {
    "vocab_embed.embedding": "embedding",
    "sigma_map.mlp.0.weight": "sigma_map.mlp.0.weight",
    "sigma_map.mlp.0.bias": "sigma_map.mlp.0.bias",
    "sigma_map.mlp.2.weight": "sigma_map.mlp.2.weight",
    "sigma_map.mlp.2.bias": "sigma_map.mlp.2.bias",
    "output_layer.norm_final.weight": "final.norm.weight",
    "output_layer.linear.weight": "final.linear.weight",
    "output_layer.linear.bias": "final.linear.bias",
    "output_layer.adaLN_modulation.weight": "final.adaLN.weight",
    "output_layer.adaLN_modulation.bias": "final.adaLN.bias",
}
# original name -> ours, inside block i (prefix 'blocks.i.' on both sides)
IN_BLOCK = {
    "norm1.weight": "norm1.weight",
    "attn_qkv.weight": "qkv.weight",
    "attn_out.weight": "attn_out.weight",
    "norm2.weight": "norm2.weight",
    "mlp.0.weight": "mlp.0.weight",
    "mlp.0.bias": "mlp.0.bias",
    "mlp.2.weight": "mlp.2.weight",
    "mlp.2.bias": "mlp.2.bias",
    "adaLN_modulation.weight": "adaLN.weight",
    "adaLN_modulation.bias": "adaLN.bias",
}
BUFFERS = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached", "logit_bias")

_TOP_INV = {v: k for k, v in TOP_LEVEL.items()}
_BLOCK_INV = {v: k for k, v in IN_BLOCK.items()}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt")


class ImportMismatchError(ValueError):
    """The source does not fit the requested model (keys, shapes, vocabulary or settings)."""


def our_name(original: str) -> str | None:
    """Our DiT parameter name for an original (DDiT) parameter name, or None if it has none."""
    if original in TOP_LEVEL:
        return TOP_LEVEL[original]
    m = _BLOCK_KEY.match(original)
    if m and m.group(2) in IN_BLOCK:
        return f"blocks.{m.group(1)}.{IN_BLOCK[m.group(2)]}"
    return None


def original_name(ours: str) -> str:
    """The original (DDiT) name of one of our DiT parameters (inverse of `our_name`)."""
    if ours in _TOP_INV:
        return _TOP_INV[ours]
    m = _BLOCK_KEY.match(ours)
    if m and m.group(2) in _BLOCK_INV:
        return f"blocks.{m.group(1)}.{_BLOCK_INV[m.group(2)]}"
    raise KeyError(ours)


# --- reading a source -------------------------------------------------------------------------------

@dataclass
class Source:
    """What a source holds, in original naming."""

    path: Path  # the file (or folder) read
    layout: str
    state: dict[str, torch.Tensor]  # original names, prefix removed, in file order
    config: dict = field(default_factory=dict)  # plain config (config.json or the Lightning run config)
    ema: list[torch.Tensor] | None = None  # EMA shadow parameters in parameter order
    folder: Path | None = None  # the HF folder (tokenizer lookup)
    global_step: int | None = None
    ignored: list[str] = field(default_factory=list)  # keys outside the backbone (teacher.*, noise.*, ...)


def resolve(src: str | Path) -> Path:
    """A local path for `src`: the path itself, or a hub snapshot (huggingface_hub.snapshot_download)."""
    p = Path(src).expanduser()
    if p.exists():
        return p
    name = str(src)
    if _HUB_NAME.match(name):  # one-line CheckpointUnavailable when it cannot be fetched (offline, unknown, gated)
        from dlm.checkpoints.registry import download_hub

        return download_hub(name, "main", ["*.json", "*.safetensors", "*.bin", "*.txt", "*.model"])
    raise FileNotFoundError(f"{src}: no such file or directory, and not a Hugging Face hub name (owner/name)")


def _weight_files(folder: Path) -> list[Path]:
    for pattern in ("*.safetensors", "pytorch_model*.bin", "*.bin", "*.pt", "*.pth", "*.ckpt"):
        files = sorted(folder.glob(pattern))
        if not files:
            continue
        if len(files) > 1 and not all("-of-" in f.name for f in files):  # shards: model-00001-of-00002...
            raise ImportMismatchError(f"{folder}: several weight files ({', '.join(f.name for f in files)}); "
                                      "import one of them")
        return files
    raise FileNotFoundError(f"{folder}: no weights (*.safetensors, *.bin, *.pt, *.pth or *.ckpt)")


def _read_json(path: Path) -> dict:
    import json

    with open(path) as f:
        cfg = json.load(f)
    # huggingface_hub's ModelHubMixin may nest the init argument: {"config": {...}}
    if isinstance(cfg.get("config"), dict) and "model_type" not in cfg:
        cfg = {**cfg["config"], **{k: v for k, v in cfg.items() if k != "config"}}
    return cfg


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _layout_of_config(cfg: dict) -> str | None:
    model_type = str(cfg.get("model_type", "")).lower()
    if model_type in ("mdlm", "duo"):
        return f"{model_type}-hf"
    if model_type == "dit":
        return "gidd-hf"
    if isinstance(cfg.get("model"), dict) and ("graph" in cfg or "tokens" in cfg):
        return "sedd-hf"
    if isinstance(cfg.get("parameterization"), dict) and cfg["parameterization"].get("name") == "multi-round-sdtt":
        return "sdtt-hf"
    return None


def read_source(src: str | Path) -> Source:
    """Read `src` (file, HF folder or hub name) into a Source (original names, EMA, config)."""
    path = resolve(src)
    folder, config, cfg_layout = None, {}, None
    if path.is_dir():
        folder = path
        files = _weight_files(path)
    else:
        files = [path]
        if path.suffix.lower() in (".safetensors", ".bin") and (path.parent / "config.json").is_file():
            folder = path.parent  # a weights file of an HF folder: its config.json belongs to it
    if folder is not None and (folder / "config.json").is_file():
        config = _read_json(folder / "config.json")
        cfg_layout = _layout_of_config(config)

    state: dict[str, torch.Tensor] = {}
    ema, step, layout = None, None, None
    for f in files:
        obj = load_file(f)
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # Lightning checkpoint
            hp = to_plain(obj.get("hyper_parameters")) or {}  # a dict (or AttributeDict stand-in) with 'config'
            run_cfg = hp.get("config") if isinstance(hp, dict) else None
            if isinstance(run_cfg, dict) and not config:
                config = run_cfg
            layout = "duo-lightning" if isinstance(config.get("algo"), dict) else "mdlm-lightning"
            ema_state = obj.get("ema")
            if isinstance(ema_state, dict) and isinstance(ema_state.get("shadow_params"), (list, tuple)):
                ema = list(ema_state["shadow_params"])
            step = obj.get("global_step")
            obj = obj["state_dict"]
        elif isinstance(obj, dict) and _is_tensor_dict(obj.get("model")):  # SEDD run checkpoint
            layout = "sedd-run"
            ema_state = obj.get("ema")
            if isinstance(ema_state, dict) and isinstance(ema_state.get("shadow_params"), (list, tuple)):
                ema = list(ema_state["shadow_params"])
            step = obj.get("step")
            obj = obj["model"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            found = sorted(map(str, obj))[:20] if isinstance(obj, dict) else type(obj).__name__
            raise ImportMismatchError(f"{f}: not a state dict or a Lightning/SEDD checkpoint (top level: {found})")
        state.update(obj)
    if layout == "sedd-run" and not config:  # SEDD run dir: <run>/checkpoints-meta/checkpoint.pth, <run>/.hydra
        hydra_cfg = path.parent.parent / ".hydra" / "config.yaml"
        if hydra_cfg.is_file():
            import yaml

            config = yaml.safe_load(hydra_cfg.read_text()) or {}
    state, ignored = _strip_prefix(state)
    return Source(path=path, layout=layout or cfg_layout or "weights", state=state, config=config, ema=ema,
                  folder=folder, global_step=int(step) if isinstance(step, int) else None, ignored=ignored)


def _strip_prefix(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Keys relative to the backbone: 'backbone.' (Lightning, HF MDLM/DUO; twice when every key has it twice,
    SDTT's teacher) or DDP 'module.' removed; with a 'backbone.' prefix every other key (teacher.*, noise.*) is
    ignored."""
    for prefix in ("backbone.", "module."):
        if any(k.startswith(prefix) for k in state):
            if prefix == "module." and not all(k.startswith(prefix) for k in state):
                continue
            kept = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if prefix == "backbone." and all(k.startswith(prefix) for k in kept):  # SDTT's hub MDLM teacher
                kept = {k[len(prefix):]: v for k, v in kept.items()}
            return kept, [k for k in state if not k.startswith(prefix)]
    return dict(state), []


# --- the pieces of an import ------------------------------------------------------------------------

def _cfg(cfg: dict, *paths: str) -> Any:
    """The first set value among dotted `paths` in a plain config; unresolved interpolations are skipped."""
    for p in paths:
        node: Any = cfg
        for part in p.split("."):
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is None or (isinstance(node, str) and "${" in node):
            continue
        return node
    return None


CONFIG_KEYS = {  # setting -> where the layouts keep it (HF config.json keys, then Lightning/SEDD run configs)
    "n_heads": ("n_heads", "num_attention_heads", "model.n_heads"),
    "hidden": ("hidden_dim", "hidden_size", "model.hidden_size"),
    "n_blocks": ("n_blocks", "num_hidden_layers", "model.n_blocks"),
    "cond_dim": ("cond_dim", "timestep_cond_dim", "model.cond_dim"),
    "vocab_size": ("vocab_size",),
    "length": ("model_length", "max_seq_len", "model.length"),
    "dropout": ("dropout", "attention_dropout", "model.dropout"),
    "time_conditioning": ("time_conditioning", "algo.time_conditioning"),
    "causal": ("causal", "algo.causal_attention", "model.causal"),
    "noise": ("noise.type",),
    "noise_eps": ("noise.eps",),
    "p_uniform": ("p_uniform", "model.p_uniform"),
    "t_eps": ("t_eps", "model.t_eps"),
    "graph": ("graph.type",),
    "scale_by_sigma": ("model.scale_by_sigma", "scale_by_sigma"),
}


def config_value(cfg: dict, key: str) -> Any:
    return _cfg(cfg, *CONFIG_KEYS[key])


def apply_ema(src: Source) -> bool:
    """Replace the parameters by the EMA shadow (same order as the file's parameter keys, buffers skipped).
    Returns whether it did."""
    if not src.ema:
        return False
    names = [k for k in src.state if k not in BUFFERS]
    if len(src.ema) < len(names):
        raise ImportMismatchError(f"{src.path}: the EMA holds {len(src.ema)} tensors for {len(names)} parameters")
    bad = [f"{n}: weights {tuple(src.state[n].shape)} vs EMA {tuple(e.shape)}"
           for n, e in zip(names, src.ema) if tuple(e.shape) != tuple(src.state[n].shape)]
    if bad:
        raise ImportMismatchError(f"{src.path}: the EMA shadow does not line up with the parameters: "
                                  + "; ".join(bad[:5]))
    for n, e in zip(names, src.ema):
        src.state[n] = e
    return True


def rotary_head_dim(state: dict[str, torch.Tensor], where: str) -> tuple[int | None, dict]:
    """head_dim implied by the rotary buffers (None without any), after checking that they are our rotary
    (GPT-NeoX half-split, base 10000, v untouched). Also returns notes (GIDD's cached length, deviations)."""
    notes: dict = {}
    head_dim = None
    inv = state.get("rotary_emb.inv_freq")
    if inv is not None:
        head_dim = 2 * inv.numel()
        expected = 1.0 / ROTARY_BASE ** (torch.arange(0, head_dim, 2).float() / head_dim)
        if not torch.allclose(inv.float(), expected, rtol=1e-3, atol=0):
            raise ImportMismatchError(f"{where}: rotary_emb.inv_freq is not base-{ROTARY_BASE:g} rotary for head_dim "
                                      f"{head_dim}; our DiT cannot express it")
    cos, sin = state.get("rotary_emb.cos_cached"), state.get("rotary_emb.sin_cached")
    if cos is not None or sin is not None:
        if cos is None or sin is None or cos.dim() != 5 or cos.shape != sin.shape or cos.shape[2] != 3:
            shapes = [None if b is None else tuple(b.shape) for b in (cos, sin)]
            raise ImportMismatchError(f"{where}: unexpected rotary cache shapes {shapes}")
        hd, n = int(cos.shape[-1]), int(cos.shape[1])
        if head_dim is not None and hd != head_dim:
            raise ImportMismatchError(f"{where}: rotary buffers disagree on head_dim ({head_dim} vs {hd})")
        head_dim = hd
        inv_freq = 1.0 / ROTARY_BASE ** (torch.arange(0, hd, 2).float() / hd)
        emb = torch.outer(torch.arange(n).float(), inv_freq).repeat(1, 2)  # (n, hd): cat(freqs, freqs)
        tol = 1e-5 if cos.dtype == torch.float32 else 1e-2
        dev = max(float((cos[0, :, :2, 0].float() - emb.cos()[:, None]).abs().max()),
                  float((sin[0, :, :2, 0].float() - emb.sin()[:, None]).abs().max()))
        v_identity = bool(torch.all(cos[0, :, 2] == 1) and torch.all(sin[0, :, 2] == 0))
        if dev > tol or not v_identity:
            raise ImportMismatchError(f"{where}: rotary_emb.cos_cached/sin_cached are not half-split base-10000 rotary "
                                      f"on q, k (max deviation {dev:.3g}, v untouched: {v_identity})")
        notes["rotary_cached_length"] = n
        if dev > 0:
            notes["rotary_cache_max_deviation"] = dev  # the original uses its stored (rounded) cos/sin
    bias = state.get("logit_bias")
    if bias is not None and bool(torch.any(bias != 0)):
        raise ImportMismatchError(f"{where}: logit_bias is nonzero ({bias.flatten()[:4].tolist()}): GIDD's constant on "
                                  "the input token's logit has no counterpart in our DiT")
    return head_dim, notes


def _listing(title: str, items: list[str], limit: int = 20) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"  {title} ({len(items)}): " + ", ".join(items[:limit]) + more


def map_state(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], where: str, what: str
              ) -> dict[str, torch.Tensor]:
    """Original-named `state` -> our names, checked against `target` (our backbone's state dict).
    Any missing, unexpected or mis-shaped key raises ImportMismatchError listing them all."""
    mapped, unexpected = {}, []
    for k, v in state.items():
        if k in BUFFERS:
            continue
        ours = our_name(k)
        if ours is None or ours not in target:
            unexpected.append(k)
        else:
            mapped[ours] = v
    missing = [original_name(k) for k in target if k not in mapped]
    shapes = [f"{original_name(k)} (ours {k}): file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
              for k, v in mapped.items() if tuple(v.shape) != tuple(target[k].shape)]
    if missing or unexpected or shapes:
        lines = [f"{where} does not fit {what}:"]
        if missing:
            lines.append(_listing("missing keys", missing))
        if unexpected:
            lines.append(_listing("unexpected keys", unexpected))
        if shapes:
            lines.append(_listing("shape mismatches", shapes))
        raise ImportMismatchError("\n".join(lines))
    return mapped


def _noise(cfg: dict, algo: str, where: str) -> dict:
    kind = config_value(cfg, "noise")
    eps = config_value(cfg, "noise_eps")
    out = {"schedule": "loglinear", "eps": float(eps) if isinstance(eps, (int, float)) else 1e-3}
    if kind is None or algo in ("ar", "gidd"):
        return out
    kind = str(kind).lower().replace("-", "").replace("_", "")
    if kind in ("loglinear", "cosine"):
        out["schedule"] = kind
        return out
    raise ImportMismatchError(f"{where}: noise schedule {kind!r} has no counterpart here (loglinear, cosine)")


def _dims(src: Source, n_heads: int | None) -> dict:
    """hidden, n_blocks, n_heads, cond_dim and vocabulary rows from the weights, checked against the config."""
    where = str(src.path)
    emb = src.state.get("vocab_embed.embedding")
    if emb is None or emb.dim() != 2:
        keys = sorted(src.state)
        raise ImportMismatchError(f"{where} does not fit a DiT:\n" + _listing("missing keys", ["vocab_embed.embedding"])
                                  + "\n" + _listing("keys in the file", keys))
    rows, hidden = (int(s) for s in emb.shape)
    blocks = {int(m.group(1)) for k in src.state if (m := _BLOCK_KEY.match(k))}
    n_blocks = max(blocks) + 1 if blocks else 0
    sig = src.state.get("sigma_map.mlp.0.weight")
    cond_dim = int(sig.shape[0]) if sig is not None else int(config_value(src.config, "cond_dim") or 128)
    head_dim, notes = rotary_head_dim(src.state, where)
    from_cfg = config_value(src.config, "n_heads")
    candidates = {"--n-heads": n_heads, "config": from_cfg,
                  "rotary buffer": hidden // head_dim if head_dim else None}
    known = {k: int(v) for k, v in candidates.items() if v is not None}
    if not known:
        raise ImportMismatchError(f"{where}: the number of attention heads is not in the file (no config.json, no run "
                                  "config, no rotary buffer); pass --n-heads")
    if len(set(known.values())) > 1:
        raise ImportMismatchError(f"{where}: the number of attention heads disagrees: " +
                                  ", ".join(f"{k} {v}" for k, v in known.items()))
    heads = next(iter(known.values()))
    if head_dim and hidden % head_dim:
        raise ImportMismatchError(f"{where}: hidden {hidden} is not a multiple of the rotary head_dim {head_dim}")
    for key, value in (("hidden", hidden), ("n_blocks", n_blocks), ("cond_dim", cond_dim if sig is not None else None)):
        c = config_value(src.config, key)
        if value is not None and c is not None and int(c) != value:
            raise ImportMismatchError(f"{where}: config says {key} = {c} but the weights have {value}")
    if sig is not None and sig.dim() == 2 and sig.shape[1] != FREQ_DIM:
        raise ImportMismatchError(f"{where}: sigma_map takes {sig.shape[1]} sinusoidal features, ours {FREQ_DIM}")
    return {"hidden": hidden, "n_blocks": n_blocks, "n_heads": heads, "cond_dim": cond_dim, "rows": rows,
            "n_heads_from": sorted(known), **notes}


def _default_tokenizer(src: Source) -> str:
    if src.folder is not None and any((src.folder / f).is_file() for f in _TOKENIZER_FILES):
        return str(src.folder)
    return DEFAULT_TOKENIZER


def _truncate_vocab(state: dict[str, torch.Tensor], rows: int, K: int, where: str) -> int:
    """Cut vocabulary padding rows (GIDD v1.1: rounded up to a multiple of 128); returns the rows cut."""
    if rows == K:
        return 0
    if rows > K and rows % 128 == 0 and rows - K < 128:
        for k in ("vocab_embed.embedding", "output_layer.linear.weight", "output_layer.linear.bias"):
            if k in state and state[k].shape[0] == rows:
                state[k] = state[k][:K]
        log.warning("%s: cut %d vocabulary padding rows (%d -> %d)", where, rows - K, rows, K)
        return rows - K
    raise ImportMismatchError(f"{where}: the weights have {rows} vocabulary rows but the tokenizer gives K = {K} "
                              "(len(tokenizer), +1 for [MASK] when it has none); pass the model's tokenizer")


# --- the import -------------------------------------------------------------------------------------

def build_import(src: str | Path, algo: str, tokenizer_dir: str | Path, length: int | None = None,
                 n_heads: int | None = None, use_ema: bool = True, algo_args: dict | None = None,
                 source: Source | None = None):
    """(method with the imported weights, its constructor kwargs incl. algo, summary) for a source whose
    tokenizer is already saved in `tokenizer_dir` (dlm.data.tokenizer format)."""
    from dlm.algos import get_method
    from dlm.data.tokenizer import fingerprint, load_tokenizer, special_ids

    if algo not in ALGOS:
        raise ImportMismatchError(f"unknown algo {algo!r}; expected one of {list(ALGOS)}")
    cls = get_method(algo)
    s = source or read_source(src)
    where = str(s.path)
    ema_used = apply_ema(s) if use_ema else False
    dims = _dims(s, n_heads)
    sid = special_ids(load_tokenizer(str(tokenizer_dir)))
    cut = _truncate_vocab(s.state, dims["rows"], sid["vocab_size"], where)
    cfg = s.config

    L = length or config_value(cfg, "length") or dims.get("rotary_cached_length")
    if not L:
        raise ImportMismatchError(f"{where}: the sequence length is not in the file; pass --length")
    causal_cfg = config_value(cfg, "causal") if s.layout != "sdtt-hf" else None  # SDTT's DiT ignores model.causal
    if causal_cfg is not None and bool(causal_cfg) != cls.causal:
        raise ImportMismatchError(f"{where}: the source is {'causal (AR)' if causal_cfg else 'bidirectional'} but "
                                  f"algo {algo} needs a {'causal' if cls.causal else 'bidirectional'} DiT")
    if algo == "sedd":
        graph, scaled = config_value(cfg, "graph"), config_value(cfg, "scale_by_sigma")
        if graph is not None and graph != "absorb":
            raise ImportMismatchError(f"{where}: SEDD graph {graph!r}; `dlm import` maps the absorbing graph only "
                                      "(no uniform-graph checkpoint was released; train one with algo_args graph: uniform)")
        if scaled is not None and not scaled:
            raise ImportMismatchError(f"{where}: SEDD model with scale_by_sigma=False; algo sedd applies the absorbing "
                                      "scale_by_sigma output transformation")
    tc = config_value(cfg, "time_conditioning")
    extras: dict = {}
    if algo == "gidd":
        for key in ("p_uniform", "t_eps"):
            if (v := config_value(cfg, key)) is not None:
                extras[key] = float(v)
        if "p_uniform" not in extras and "p_uniform" not in (algo_args or {}):
            log.warning("%s: no p_uniform in the config; gidd's default applies", where)
    if algo == "d3pm" and isinstance(T := _cfg(cfg, "T", "algo.T"), int) and T > 0:
        extras["T"] = T  # discrete-time D3PM baselines (MDLM: T, DUO: algo.T)
    extras.update(algo_args or {})
    dropout = config_value(cfg, "dropout")
    kwargs = dict(algo=algo, vocab_size=sid["vocab_size"], block_length=int(L),
                  special_ids={k: sid[k] for k in ("bos", "eos", "pad", "mask")}, tokenizer_dir=str(tokenizer_dir),
                  model={"size": {k: dims[k] for k in ("hidden", "n_blocks", "n_heads", "cond_dim")},
                         "dropout": float(dropout) if dropout is not None else 0.1},
                  noise=_noise(cfg, algo, where),
                  time_conditioning=bool(tc) if tc is not None else cls.default_time_conditioning,
                  antithetic=True, **extras)
    ctor = {k: v for k, v in kwargs.items() if k != "algo"}
    method = cls(**ctor)
    what = (f"a {algo} DiT (hidden {dims['hidden']}, {dims['n_blocks']} blocks, cond_dim {dims['cond_dim']}, "
            f"K = {sid['vocab_size']}, {'causal' if cls.causal else 'bidirectional'})")
    mapped = map_state(s.state, method.backbone.state_dict(), where, what)
    method.backbone.load_state_dict(mapped, strict=True)
    method.eval()
    summary = {"source": str(src), "path": where, "layout": s.layout, "algo": algo,
               "weights": "ema" if ema_used else "as stored", "global_step": s.global_step,
               "tokenizer_dir": str(tokenizer_dir), "tokenizer_fingerprint": fingerprint(str(tokenizer_dir)),
               "truncated_vocab_rows": cut, "ignored_keys": s.ignored[:50], "n_heads_from": dims["n_heads_from"],
               **{k: dims[k] for k in ("rotary_cached_length", "rotary_cache_max_deviation") if k in dims}}
    return method, kwargs, summary


def check_expected(kwargs: dict, summary: dict, expects: dict, where: str) -> None:
    """The imported model has the settings `expects` names (a registry entry's: layout, length,
    time_conditioning, p_uniform); otherwise ImportMismatchError naming each difference."""
    have = {"layout": summary["layout"], "length": kwargs["block_length"],
            "time_conditioning": kwargs["time_conditioning"], "p_uniform": kwargs.get("p_uniform")}
    bad = []
    for key, want in expects.items():
        got = have.get(key)
        same = got is not None and (abs(float(got) - float(want)) < 1e-9 if key == "p_uniform" else got == want)
        if not same:
            bad.append(f"{key} {got!r} (expected {want!r})")
    if bad:
        raise ImportMismatchError(f"{where} is not the checkpoint the registry describes: " + "; ".join(bad))


def save_tokenizer(name: str, out: str | Path) -> None:
    """`dlm.data.tokenizer.save_pretrained_tokenizer`, with a one-line ImportMismatchError naming --tokenizer when
    the tokenizer cannot be loaded (a hub name offline, a missing folder)."""
    from dlm.data.tokenizer import save_pretrained_tokenizer

    try:
        save_pretrained_tokenizer(str(name), str(out))
    except Exception as e:  # OSError offline / missing, ValueError for an unrecognised folder, ...
        text = str(e).strip().splitlines()
        raise ImportMismatchError(
            f"cannot load the tokenizer {str(name)!r} ({type(e).__name__}: {text[0] if text else ''}); pass "
            f"--tokenizer NAME_OR_PATH with a tokenizer folder on this machine (a run's `tokenizer:` key in a "
            f"config), e.g. the pipeline's resources/tokenizers/<name>") from None


def tokenizer_out_dir(out: str | Path) -> Path:
    """Where the imported checkpoint's tokenizer is saved by default: OUT with the suffix .tokenizer."""
    out = Path(out)
    return out.with_suffix(".tokenizer") if out.suffix else out.with_name(out.name + ".tokenizer")


def import_checkpoint(src: str | Path, algo: str, out: str | Path, tokenizer: str | None = None,
                      length: int | None = None, n_heads: int | None = None, tokenizer_out: str | Path | None = None,
                      use_ema: bool = True, algo_args: dict | None = None, expects: dict | None = None) -> dict:
    """Import `src` as a dlm checkpoint at `out` (written atomically) for method `algo`; returns the summary
    stored under imported_from. `tokenizer` (name or path; default: the source folder's, else gpt2) is
    saved to `tokenizer_out` (default OUT.tokenizer), which the checkpoint's tokenizer_dir points at.
    `expects` (a registry entry's settings, `check_expected`) must hold, or nothing is written."""
    from dlm.utils import atomic_path

    if algo not in ALGOS:
        raise ImportMismatchError(f"unknown algo {algo!r}; expected one of {list(ALGOS)}")
    source = read_source(src)
    tok_name = tokenizer or _default_tokenizer(source)
    tok_dir = Path(tokenizer_out) if tokenizer_out else tokenizer_out_dir(out)
    existed = tok_dir.exists()
    save_tokenizer(tok_name, tok_dir)
    try:
        method, kwargs, summary = build_import(src, algo, tok_dir, length, n_heads, use_ema, algo_args, source=source)
        if expects:
            check_expected(kwargs, summary, expects, str(source.path))
    except Exception:
        if not existed:  # leave nothing behind for a source that does not fit
            shutil.rmtree(tok_dir, ignore_errors=True)
        raise
    summary["tokenizer"] = str(tok_name)
    ckpt = {"hyper_parameters": {"method": kwargs},
            "state_dict": {f"method.{k}": v.detach().clone().contiguous() for k, v in method.state_dict().items()},
            "global_step": source.global_step, "imported_from": summary}
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
    log.info("imported %s (%s, weights %s) as %s: %s", src, summary["layout"], summary["weights"], algo, out)
    return summary
