# Paper tables (CSV, Markdown, booktabs LaTeX) and figures (PDF, PNG). All cheap: they run on the submitting
# host, never as cluster jobs.


localrules:
    table_val_ppl,
    table_duo_curriculum,
    table_gidd_pu,
    table_gen_ppl,
    figure_gen_ppl,
    table_sampler,


rule table_val_ppl:
    input:
        val_ppl_jsons(),
    output:
        expand("results/tables/val_ppl.{ext}", ext=["csv", "md", "tex"]),
    params:
        table="val_ppl",
    log:
        "logs/report/table_val_ppl.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/tables.py"


rule table_duo_curriculum:
    input:
        lambda wildcards: val_ppl_jsons(("udlm", "duo")),
    output:
        expand("results/tables/duo_curriculum.{ext}", ext=["csv", "md", "tex"]),
    params:
        table="duo_curriculum",
    log:
        "logs/report/table_duo_curriculum.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/tables.py"


rule table_gidd_pu:
    input:
        lambda wildcards: val_ppl_jsons(("gidd", "mdlm")),
    output:
        expand("results/tables/gidd_pu.{ext}", ext=["csv", "md", "tex"]),
    params:
        table="gidd_pu",
    log:
        "logs/report/table_gidd_pu.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/tables.py"


rule table_gen_ppl:
    input:
        "results/eval/reference/gen_heldout.json",
        gen_ppl_jsons(),
    output:
        expand("results/tables/gen_ppl.{ext}", ext=["csv", "md", "tex"]),
        "results/tables/gen_ppl_seeds.csv",
    params:
        table="gen_ppl",
        options={"entropy_margin": config["evaluation"]["entropy_margin"]},
    log:
        "logs/report/table_gen_ppl.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/tables.py"


rule figure_gen_ppl:
    input:
        "results/tables/gen_ppl_seeds.csv",
    output:
        expand("results/figures/gen_ppl_steps.{ext}", ext=["pdf", "png"]),
    params:
    log:
        "logs/report/figure_gen_ppl.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/figure.py"


rule table_sampler:
    input:
        lambda wildcards: gen_jsons_for(wildcards.table),
    output:
        expand("results/tables/{{table}}.{ext}", ext=["csv", "md", "tex"]),
    wildcard_constraints:
        table="|".join(SAMPLER_TABLES),
    params:
        table=lambda wildcards: wildcards.table,
    log:
        "logs/report/table_{table}.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/tables.py"
