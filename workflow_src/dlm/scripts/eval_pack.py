from dlm.data.eval_corpora import pack_eval_corpus
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
pack_eval_corpus(snakemake.wildcards.zs, snakemake.input.text, snakemake.input.tokenizer, p.packing, p.block_length,
                 snakemake.output[0], insert_eos=p.insert_eos, min_blocks=p.min_blocks)
