"""dlm: one codebase for discrete diffusion language models (AR, MDLM, UDLM/DUO, ...).

The Snakemake workflow at the repository root calls into this package; every function here can
also be used on its own (see `dlm --help`).
"""

__version__ = "0.1.0"


def __getattr__(name):
    """`dlm.load` and `dlm.Model` (the Python API, dlm.api) are imported lazily: the workflow imports
    dlm.config without torch."""
    if name in ("load", "Model", "Samples"):
        from dlm import api

        return getattr(api, name)
    raise AttributeError(f"module 'dlm' has no attribute {name!r}")
