"""Sample-quality metrics: generative perplexity under a judge LM and unigram entropy; MAUVE lives in
`dlm.evaluation.mauve` (imported on demand: mauve-text brings scikit-learn and faiss)."""

from dlm.evaluation.entropy import mean_entropy, unigram_entropy
from dlm.evaluation.gen_ppl import generative_perplexity, read_texts, run_gen_ppl
from dlm.evaluation.judge import CheckpointJudge, HFJudge, load_judge

__all__ = ["unigram_entropy", "mean_entropy", "generative_perplexity", "read_texts", "run_gen_ppl",
           "HFJudge", "CheckpointJudge", "load_judge"]
