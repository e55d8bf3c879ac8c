# Images as tokens (DUO's CIFAR-10; docs/images.md): data -> train (the UNet, any image run) -> sample (by class
# and without) -> FID / IS against the training split -> the images table and the sample grid. The offline
# default scores with a classifier the pipeline trains on the digits; paper configs with Inception.


localrules:
    images_data,
    table_images,
    figure_images,
    images,


rule images_data:
    input:
        image_data_inputs,
    output:
        directory(f"{IMG_DIR}/data"),
    params:
        dataset=IMG["dataset"],
    log:
        f"logs/images/{IMG['dataset']['name']}/data.log",
    conda:
        "../environment.yml"
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow_src/dlm/scripts/images_data.py"


rule images_classifier:
    input:
        data=f"{IMG_DIR}/data",
    output:
        model=f"{IMG_DIR}/features/classifier.pt",
        report=f"{IMG_DIR}/features/classifier.json",
    params:
        settings=IMG["evaluation"]["classifier"],
    log:
        f"logs/images/{IMG['dataset']['name']}/classifier.log",
    conda:
        "../environment.yml"
    benchmark:
        f"benchmarks/images/{IMG['dataset']['name']}/classifier.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../workflow_src/dlm/scripts/images_classifier.py"


rule images_reference:
    input:
        unpack(image_feature_inputs),
        data=f"{IMG_DIR}/data",
    output:
        state=f"{IMG_DIR}/eval/reference.pt",
        json=f"{IMG_DIR}/eval/reference.json",
    params:
        features=IMG["evaluation"]["features"],
        inception_weights=IMG["evaluation"]["inception_weights"],
        batch_size=IMG["evaluation"]["batch_size"],
        seed=IMG["evaluation"]["seed"],
    log:
        f"logs/images/{IMG['dataset']['name']}/reference.log",
    conda:
        "../environment.yml"
    benchmark:
        f"benchmarks/images/{IMG['dataset']['name']}/reference.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=by_attempt(16000),
        runtime=by_attempt(120),
    script:
        "../workflow_src/dlm/scripts/images_reference.py"


rule images_train:
    input:
        data=f"{IMG_DIR}/data",
    output:
        ckpt=f"{IMG_DIR}/models/{{irun}}/final.ckpt",
        metrics=f"{IMG_DIR}/models/{{irun}}/final_metrics.csv",
    wildcard_constraints:
        irun=only(IMAGE_RUNS),
    params:
        hp=image_run_params,
    log:
        f"logs/images/{IMG['dataset']['name']}/train/{{irun}}.log",
    conda:
        "../environment.yml"
    benchmark:
        f"benchmarks/images/{IMG['dataset']['name']}/train/{{irun}}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=by_attempt(16000),
        runtime=by_attempt(1440),
    script:
        "../workflow_src/dlm/scripts/train.py"


rule images_sample:
    input:
        ckpt=f"{IMG_DIR}/models/{{irun}}/final.ckpt",
        data=f"{IMG_DIR}/data",
    output:
        f"{IMG_DIR}/samples/{{irun}}/{{isampler}}_{{icond}}_T{{steps}}_s{{seed}}.npz",
    wildcard_constraints:
        irun=only(IMAGE_RUNS),
        isampler=r"[a-z][a-z0-9_]*",
        icond="class|uncond",
    params:
        settings=image_variant,
        condition=image_condition,
        guidance=image_guidance,
        labels_from=IMG["sampling"]["labels_from"],
        num_samples=IMG["sampling"]["num_samples"],
        batch_size=IMG["sampling"]["batch_size"],
    log:
        f"logs/images/{IMG['dataset']['name']}/sample/{{irun}}/{{isampler}}_{{icond}}_T{{steps}}_s{{seed}}.log",
    conda:
        "../environment.yml"
    benchmark:
        f"benchmarks/images/{IMG['dataset']['name']}/sample/{{irun}}/{{isampler}}_{{icond}}_T{{steps}}_s{{seed}}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=by_attempt(16000),
        runtime=by_attempt(600),
    script:
        "../workflow_src/dlm/scripts/images_sample.py"


rule images_score:
    input:
        unpack(image_feature_inputs),
        samples=f"{IMG_DIR}/samples/{{irun}}/{{isampler}}_{{icond}}_T{{steps}}_s{{seed}}.npz",
        reference=f"{IMG_DIR}/eval/reference.pt",
    output:
        f"{IMG_DIR}/eval/{{irun}}/{{isampler}}_{{icond}}_T{{steps}}_s{{seed}}.json",
    wildcard_constraints:
        irun=only(IMAGE_RUNS),
        isampler=r"[a-z][a-z0-9_]*",
        icond="class|uncond",
    params:
        features=IMG["evaluation"]["features"],
        inception_weights=IMG["evaluation"]["inception_weights"],
        batch_size=IMG["evaluation"]["batch_size"],
        seed=IMG["evaluation"]["seed"],
    log:
        f"logs/images/{IMG['dataset']['name']}/score/{{irun}}/{{isampler}}_{{icond}}_T{{steps}}_s{{seed}}.log",
    conda:
        "../environment.yml"
    benchmark:
        f"benchmarks/images/{IMG['dataset']['name']}/score/{{irun}}/{{isampler}}_{{icond}}_T{{steps}}_s{{seed}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=by_attempt(16000),
        runtime=by_attempt(120),
    script:
        "../workflow_src/dlm/scripts/images_score.py"


rule table_images:
    input:
        reference=f"{IMG_DIR}/eval/reference.json",
        scores=image_score_jsons(),
        paper=PAPER_VALUES,
    output:
        report(
            "results/tables/images.csv",
            caption="../workflow_src/dlm/report/captions/images.rst",
            category="Table data (CSV)",
            labels={"table": "images"},
        ),
        "results/tables/images.md",
        "results/tables/images.tex",
        report(
            "results/tables/images.html",
            caption="../workflow_src/dlm/report/captions/images.rst",
            category="Tables",
            labels={"table": "images"},
        ),
    params:
        dataset=IMG["dataset"]["name"],
    log:
        "logs/report/table_images.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/images_table.py"


rule figure_images:
    input:
        data=f"{IMG_DIR}/data",
        samples=image_sample_files(),
    output:
        "results/figures/images_samples.pdf",
        report(
            "results/figures/images_samples.png",
            caption="../workflow_src/dlm/report/captions/images_samples.rst",
            category="Figures",
            labels={"figure": "images_samples"},
        ),
    params:
        per_class=IMG["evaluation"]["grid_per_class"],
    log:
        "logs/report/figure_images.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/images_figure.py"


# `snakemake images`: only the image part (the table and the sample grid); with config/paper/cifar10.yaml
# layered on a text config, DUO's CIFAR-10 experiment alone


rule images:
    input:
        images_targets(),
