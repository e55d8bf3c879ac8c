"""Thin Snakemake adapters: read `snakemake.input/output/params`, call the library, log to `log:`."""
