# MAUVE (ReMDM protocol, mauve-text 0.4.0): model samples against held-out references drawn disjoint from the
# gen-PPL reference text, one JSON per unconditional sample file, plus the held-out-vs-held-out reference row.


localrules:
    mauve_references,


rule mauve_references:
    input:
        data=f"results/data/{CORPUS}/packed",
        tokenizer=f"resources/tokenizers/{tokenizer_id()}",
        exclude="results/samples/reference/heldout.jsonl",
    output:
        "results/samples/reference/mauve_references.jsonl",
    params:
        num_references=max_sample_count(),
        seed=config["evaluation"]["mauve"]["reference_seed"],
    log:
        "logs/sample/reference/mauve_references.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/mauve_references.py"


rule mauve:
    input:
        samples="results/samples/{run}/{sampler}_T{steps}_s{seed}.jsonl",
        references="results/samples/reference/mauve_references.jsonl",
        tokenizer=f"resources/tokenizers/{tokenizer_id()}",
    output:
        "results/eval/{run}/mauve_{sampler}_T{steps}_s{seed}.json",
    params:
        **mauve_params(),
    log:
        "logs/eval/{run}/mauve_{sampler}_T{steps}_s{seed}.log",
    conda:
        "../environment.yml"
    benchmark:
        "benchmarks/eval/{run}/mauve_{sampler}_T{steps}_s{seed}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=by_attempt(8000),
        runtime=by_attempt(120),
    script:
        "../workflow_src/dlm/scripts/mauve_score.py"


use rule mauve as mauve_reference with:
    input:
        samples="results/samples/reference/heldout.jsonl",
        references="results/samples/reference/mauve_references.jsonl",
        tokenizer=f"resources/tokenizers/{tokenizer_id()}",
    output:
        "results/eval/reference/mauve_heldout.json",
    log:
        "logs/eval/reference/mauve_heldout.log",
    benchmark:
        "benchmarks/eval/reference/mauve_heldout.tsv"
