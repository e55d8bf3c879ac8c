from dlm.data.tokenizer import save_pretrained_tokenizer, train_bpe
from dlm.utils import setup_job

setup_job(snakemake.log[0], snakemake.threads)
tok = snakemake.params.tokenizer
if tok["kind"] == "bpe":
    train_bpe(snakemake.input.train, tok["vocab_size"], snakemake.output[0])
else:
    save_pretrained_tokenizer(tok["name_or_path"], snakemake.output[0])
