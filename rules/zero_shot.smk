# Zero-shot perplexity (MDLM Table 3, DUO Table 2): corpora the models were not trained on, tokenized with the
# pipeline's tokenizer and packed like the training data, scored with the validation bound; one table. Each run
# reads the corpora packed with or without an EOS between documents, as its method's original code did.


rule zero_shot_corpus:
    input:
        zero_shot_corpus_inputs,
    output:
        text="results/data/zero_shot/{zs}/raw/valid.jsonl",
        meta="results/data/zero_shot/{zs}/raw/meta.json",
    wildcard_constraints:
        zs="|".join(ZERO_SHOT) or "(?!)",
    params:
        source=lambda wildcards: config["zero_shot"]["corpora"][wildcards.zs],
    log:
        "logs/data/zero_shot/{zs}/corpus.log",
    conda:
        "../environment.yml"
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../workflow_src/dlm/scripts/eval_corpus.py"


rule zero_shot_pack:
    input:
        text="results/data/zero_shot/{zs}/raw/valid.jsonl",
        tokenizer=f"resources/tokenizers/{tokenizer_id()}",
    output:
        directory("results/data/zero_shot/{zs}/packed"),
    wildcard_constraints:
        zs="|".join(ZERO_SHOT) or "(?!)",
    params:
        packing=config["data"]["packing"],
        block_length=config["data"]["block_length"],
        insert_eos=True,  # an EOS after every document (MDLM's code); packed_noeos below: none (DUO's zero-shot)
        min_blocks=config["zero_shot"]["min_blocks"],
    log:
        "logs/data/zero_shot/{zs}/pack.log",
    conda:
        "../environment.yml"
    benchmark:
        "benchmarks/data/zero_shot/{zs}/pack.tsv"
    resources:
        mem_mb=8000,
        runtime=120,
    script:
        "../workflow_src/dlm/scripts/eval_pack.py"


use rule zero_shot_pack as zero_shot_pack_noeos with:
    output:
        directory("results/data/zero_shot/{zs}/packed_noeos"),
    params:
        packing=config["data"]["packing"],
        block_length=config["data"]["block_length"],
        insert_eos=False,
        min_blocks=config["zero_shot"]["min_blocks"],
    log:
        "logs/data/zero_shot/{zs}/pack_noeos.log",
    benchmark:
        "benchmarks/data/zero_shot/{zs}/pack_noeos.tsv"


rule zero_shot_ppl:
    input:
        ckpt="results/models/{run}/final.ckpt",
        data=zero_shot_packed,
    output:
        "results/eval/{run}/zero_shot.json",
    params:
        corpora=ZERO_SHOT,
        batch_size=config["zero_shot"]["batch_size"],
        max_batches=config["zero_shot"]["max_batches"],
        seed=config["zero_shot"]["seed"],
        passes=config["zero_shot"]["passes"],
    log:
        "logs/eval/{run}/zero_shot.log",
    conda:
        "../environment.yml"
    benchmark:
        "benchmarks/eval/{run}/zero_shot.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=by_attempt(8000),
        runtime=by_attempt(240),
    script:
        "../workflow_src/dlm/scripts/zero_shot.py"


localrules:
    table_zero_shot,


rule table_zero_shot:
    input:
        zero_shot=zero_shot_jsons(),
        val=[f"results/eval/{r}/val_ppl.json" for r in zero_shot_runs()],
        paper=PAPER_VALUES,
    output:
        report(
            "results/tables/zero_shot.csv",
            caption="../workflow_src/dlm/report/captions/zero_shot.rst",
            category="Table data (CSV)",
            labels={"table": "zero_shot"},
        ),
        "results/tables/zero_shot.md",
        "results/tables/zero_shot.tex",
        report(
            "results/tables/zero_shot.html",
            caption="../workflow_src/dlm/report/captions/zero_shot.rst",
            category="Tables",
            labels={"table": "zero_shot"},
        ),
    params:
        in_domain=CORPUS,
        dataset=CORPUS,
    log:
        "logs/report/table_zero_shot.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/zero_shot_table.py"
