"""Judge language models for generative perplexity.

A *judge* is any object with

* ``tokenizer``  -- a Hugging Face tokenizer used to retokenize the generated texts,
* ``eos_id``     -- the judge tokenizer's EOS id (also used as the pad id),
* ``max_length`` -- the judge's context size,
* ``name``       -- a label recorded in the metric JSON,
* ``logits(input_ids, attention_mask) -> (B, T, V)`` float32 logits where ``logits[:, i]``
  predicts token ``i + 1`` (a causal LM).

`HFJudge` wraps a Hugging Face causal LM (GPT-2 large in the papers); `CheckpointJudge` wraps an
autoregressive model trained by this pipeline. `load_judge` chooses between them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


class HFJudge:
    """A Hugging Face ``AutoModelForCausalLM`` judge (fp32, eval mode), pad token := EOS."""

    def __init__(self, name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
                 max_length: int | None = None):
        from transformers import AutoModelForCausalLM

        from dlm.checkpoints.safe_load import pretrained_model
        from dlm.data.tokenizer import load_tokenizer

        self.name = str(name_or_path)
        self.device = torch.device(device)
        self.tokenizer = load_tokenizer(self.name)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"judge tokenizer {self.name!r} has no EOS token")
        # As in MDLM/DUO: the judge's pad token is its EOS token (GPT-2 has no pad token).
        self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.eos_id = int(self.tokenizer.eos_token_id)
        self.model = pretrained_model(AutoModelForCausalLM, self.name, dtype=torch.float32)  # no repository code
        self.model.to(self.device).eval()
        if max_length is None:
            cfg = self.model.config
            max_length = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
            if max_length is None:
                raise ValueError(f"cannot infer the context size of judge {self.name!r}; pass max_length")
        self.max_length = int(max_length)

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids.to(self.device),
                         attention_mask=attention_mask.to(self.device))
        return out.logits.float()


class CheckpointJudge:
    """An autoregressive model trained by this pipeline (a Lightning ``.ckpt``), loaded lazily."""

    def __init__(self, ckpt_path: str | os.PathLike, device: str | torch.device = "cpu",
                 max_length: int | None = None):
        self._max_length = None if max_length is None else int(max_length)
        self.ckpt_path = Path(ckpt_path)
        if not self.ckpt_path.is_file():
            raise FileNotFoundError(f"judge checkpoint not found: {self.ckpt_path}")
        self.name = str(ckpt_path)
        self.device = torch.device(device)
        self._module = None
        self._tokenizer = None

    @property
    def module(self):
        if self._module is None:
            from dlm.algos import load_module

            module = load_module(str(self.ckpt_path), map_location=self.device)
            module.to(self.device)
            module.float()
            module.eval()
            self._module = module
        return self._module

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from dlm.data.tokenizer import load_tokenizer

            tok = load_tokenizer(self.module.hparams["tokenizer_dir"])
            if tok.eos_token_id is None:
                raise ValueError(f"tokenizer of judge checkpoint {self.name!r} has no EOS token")
            tok.pad_token = tok.eos_token
            tok.padding_side = "right"
            self._tokenizer = tok
        return self._tokenizer

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def max_length(self) -> int:
        """The override given at construction, else the checkpoint's ``block_length``."""
        if self._max_length is not None:
            return self._max_length
        return int(self.module.hparams["block_length"])

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # The pipeline's AR model takes no attention mask: it is causal, and padding is on the
        # right, so logits at real positions never see padded positions.
        # The raw network logits, [MASK] included: a sample that contains the [MASK] id (a uniform-state
        # model may emit it: its uniform noise covers all K ids) gets the judge's own, finite probability for
        # it, as the papers' gpt2-large scores the text "[MASK]" as ordinary (improbable) text; the AR
        # method's -inf on [MASK] (for its own sampling and bound) would make the whole file's gen PPL inf.
        del attention_mask
        return self.module.backbone(input_ids.to(self.device)).float()


def _looks_local(name: str) -> bool:
    """Whether `name` is meant as a filesystem path rather than a hub id like 'gpt2-large' or
    'openai-community/gpt2-large' (at most one '/', no leading '/', '.', or '~')."""
    return (name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
            or name.endswith(".ckpt") or Path(name).expanduser().exists())


def load_judge(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
               max_length: int | None = None):
    """A `CheckpointJudge` for a ``*.ckpt`` path, otherwise an `HFJudge` (hub id or local dir)."""
    name = str(name_or_path)
    if name.endswith(".ckpt"):
        return CheckpointJudge(name, device=device, max_length=max_length)
    if _looks_local(name) and not Path(name).expanduser().exists():
        raise FileNotFoundError(f"judge path does not exist: {name}")
    path = Path(name).expanduser()
    return HFJudge(str(path) if path.exists() else name, device=device, max_length=max_length)
