"""dlm: one codebase for discrete diffusion language models (AR, MDLM, UDLM/DUO, ...).

The Snakemake workflow at the repository root calls into this package; every function here can
also be used on its own (see `dlm --help`).
"""

__version__ = "0.1.0"
