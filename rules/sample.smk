# Sampling (GPU rule): one JSONL of samples per (run, sampler variant, steps, seed).


rule sample:
    input:
        unpack(sample_inputs),
    output:
        "results/samples/{run}/{sampler}_T{steps}_s{seed}.jsonl",
    params:
        num_samples=sample_count,
        batch_size=config["sampling"]["batch_size"],
        settings=variant,
        prompts=config["sampling"]["prompts"],
    log:
        "logs/sample/{run}/{sampler}_T{steps}_s{seed}.log",
    conda:
        "../environment.yml"
    benchmark:
        "benchmarks/sample/{run}/{sampler}_T{steps}_s{seed}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=by_attempt(8000),
        runtime=by_attempt(240),
    script:
        "../workflow_src/dlm/scripts/sample.py"


localrules:
    heldout_text,


rule heldout_text:
    input:
        data=f"results/data/{CORPUS}/packed",
        tokenizer=f"resources/tokenizers/{tokenizer_id()}",
    output:
        "results/samples/reference/heldout.jsonl",
    params:
        num_samples=config["sampling"]["num_samples"],
    log:
        "logs/sample/reference/heldout.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/heldout_text.py"
