import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(2)

SPECIAL = {"bos": 0, "eos": 0, "pad": None, "mask": 1}


def make_module(algo: str, vocab_size: int = 32, block_length: int = 16, **kw):
    """A tiny untrained module of any method, without data (for loss and sampler tests)."""
    from dlm.algos import get_method

    kw.setdefault("time_conditioning", algo != "mdlm")
    return get_method(algo)(vocab_size=vocab_size, block_length=block_length, special_ids=SPECIAL,
                            tokenizer_dir="unused", model={"size": "nano", "dropout": 0.0}, **kw)


@pytest.fixture
def module_factory():
    return make_module
