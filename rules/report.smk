# Paper tables (CSV, Markdown, booktabs LaTeX) and figures (PDF, PNG). All cheap: they run on the submitting
# host, never as cluster jobs.


localrules:
    table_val_ppl,
    table_claims,
    table_duo_curriculum,
    table_gidd_pu,
    table_gen_ppl,
    figure_gen_ppl,
    table_sampler,


rule table_val_ppl:
    input:
        val_ppl_jsons(),
        paper=PAPER_VALUES,
    output:
        report(
            "results/tables/val_ppl.csv",
            caption="../workflow_src/dlm/report/captions/val_ppl.rst",
            category="Table data (CSV)",
            labels={"table": "val_ppl"},
        ),
        "results/tables/val_ppl.md",
        "results/tables/val_ppl.tex",
        report(
            "results/tables/val_ppl.html",
            caption="../workflow_src/dlm/report/captions/val_ppl.rst",
            category="Tables",
            labels={"table": "val_ppl"},
        ),
    params:
        table="val_ppl",
        options={"dataset": CORPUS, "judge": config["evaluation"]["judge"], "distilled": distill_specs()},
    log:
        "logs/report/table_val_ppl.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/tables.py"


rule table_duo_curriculum:
    input:
        lambda wildcards: val_ppl_jsons(("udlm", "duo")),
        paper=PAPER_VALUES,
    output:
        report(
            "results/tables/duo_curriculum.csv",
            caption="../workflow_src/dlm/report/captions/duo_curriculum.rst",
            category="Table data (CSV)",
            labels={"table": "duo_curriculum"},
        ),
        "results/tables/duo_curriculum.md",
        "results/tables/duo_curriculum.tex",
        report(
            "results/tables/duo_curriculum.html",
            caption="../workflow_src/dlm/report/captions/duo_curriculum.rst",
            category="Tables",
            labels={"table": "duo_curriculum"},
        ),
    params:
        table="duo_curriculum",
        options={"dataset": CORPUS},
    log:
        "logs/report/table_duo_curriculum.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/tables.py"


rule table_gidd_pu:
    input:
        lambda wildcards: val_ppl_jsons(("gidd", "mdlm")),
        paper=PAPER_VALUES,
    output:
        report(
            "results/tables/gidd_pu.csv",
            caption="../workflow_src/dlm/report/captions/gidd_pu.rst",
            category="Table data (CSV)",
            labels={"table": "gidd_pu"},
        ),
        "results/tables/gidd_pu.md",
        "results/tables/gidd_pu.tex",
        report(
            "results/tables/gidd_pu.html",
            caption="../workflow_src/dlm/report/captions/gidd_pu.rst",
            category="Tables",
            labels={"table": "gidd_pu"},
        ),
    params:
        table="gidd_pu",
        options={"dataset": CORPUS},
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
        paper=PAPER_VALUES,
    output:
        report(
            "results/tables/gen_ppl.csv",
            caption="../workflow_src/dlm/report/captions/gen_ppl.rst",
            category="Table data (CSV)",
            labels={"table": "gen_ppl"},
        ),
        "results/tables/gen_ppl.md",
        "results/tables/gen_ppl.tex",
        "results/tables/gen_ppl_seeds.csv",
        report(
            "results/tables/gen_ppl.html",
            caption="../workflow_src/dlm/report/captions/gen_ppl.rst",
            category="Tables",
            labels={"table": "gen_ppl"},
        ),
    params:
        table="gen_ppl",
        options={"entropy_margin": config["evaluation"]["entropy_margin"], "dataset": CORPUS},
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
        "results/figures/gen_ppl_steps.pdf",
        report(
            "results/figures/gen_ppl_steps.png",
            caption="../workflow_src/dlm/report/captions/gen_ppl_steps.rst",
            category="Figures",
            labels={"figure": "gen_ppl_steps"},
        ),
    params:
    log:
        "logs/report/figure_gen_ppl.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/figure.py"


rule table_sampler:
    input:
        unpack(sampler_table_refs),
        lambda wildcards: gen_jsons_for(wildcards.table),
        mauve=lambda wildcards: mauve_jsons_for(wildcards.table),
    output:
        report(
            "results/tables/{table}.csv",
            caption="../workflow_src/dlm/report/captions/sampler_table.rst",
            category="Table data (CSV)",
            labels={"table": "{table}"},
        ),
        "results/tables/{table}.md",
        "results/tables/{table}.tex",
        report(
            "results/tables/{table}.html",
            caption="../workflow_src/dlm/report/captions/sampler_table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    wildcard_constraints:
        table="|".join(SAMPLER_TABLES),
    params:
        table=lambda wildcards: wildcards.table,
        options=sampler_table_options,
    log:
        "logs/report/table_{table}.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/tables.py"


# Figures beside gen PPL, the compute-cost table, and the named targets (one per paper, one per table).


localrules:
    table_cost,
    figure_entropy,
    figure_mauve,
    figure_frontier,
    figure_training_curves,
    duo_paper,
    mdlm_paper,
    remdm_paper,
    gidd_paper,
    table_distill,
    table_remdm,
    table_sampler_speed,
    table_semi_ar,
    table_self_correction,


rule figure_entropy:
    input:
        "results/tables/gen_ppl_seeds.csv",
    output:
        "results/figures/entropy_steps.pdf",
        report(
            "results/figures/entropy_steps.png",
            caption="../workflow_src/dlm/report/captions/entropy_steps.rst",
            category="Figures",
            labels={"figure": "entropy_steps"},
        ),
    params:
        figure="entropy",
    log:
        "logs/report/figure_entropy.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/report_figure.py"


rule figure_mauve:
    input:
        jsons=mauve_jsons(),
        reference="results/eval/reference/mauve_heldout.json",
    output:
        "results/figures/mauve_steps.pdf",
        report(
            "results/figures/mauve_steps.png",
            caption="../workflow_src/dlm/report/captions/mauve_steps.rst",
            category="Figures",
            labels={"figure": "mauve_steps"},
        ),
    params:
        figure="mauve",
    log:
        "logs/report/figure_mauve.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/report_figure.py"


rule figure_frontier:
    input:
        jsons=frontier_jsons(),
        reference="results/eval/reference/gen_heldout.json",
    output:
        "results/figures/frontier.pdf",
        report(
            "results/figures/frontier.png",
            caption="../workflow_src/dlm/report/captions/frontier.rst",
            category="Figures",
            labels={"figure": "frontier"},
        ),
    params:
        figure="frontier",
    log:
        "logs/report/figure_frontier.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/report_figure.py"


rule figure_training_curves:
    input:
        training_curve_csvs(),
    output:
        "results/figures/training_curves.pdf",
        report(
            "results/figures/training_curves.png",
            caption="../workflow_src/dlm/report/captions/training_curves.rst",
            category="Figures",
            labels={"figure": "training_curves"},
        ),
    params:
        figure="training_curves",
        curves=training_curve_params(),
    log:
        "logs/report/figure_training_curves.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/report_figure.py"


rule table_cost:
    input:
        benchmark_files(),
    output:
        report(
            "results/tables/cost.csv",
            caption="../workflow_src/dlm/report/captions/cost.rst",
            category="Table data (CSV)",
            labels={"table": "cost"},
        ),
        "results/tables/cost.md",
        "results/tables/cost.tex",
        report(
            "results/tables/cost.html",
            caption="../workflow_src/dlm/report/captions/cost.rst",
            category="Tables",
            labels={"table": "cost"},
        ),
    params:
        algos=run_algos(),
    log:
        "logs/report/table_cost.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/cost_table.py"


# `snakemake duo_paper` (mdlm_paper, remdm_paper, gidd_paper): that paper's tables and figures in this config


rule duo_paper:
    input:
        paper_targets("duo_paper"),


rule mdlm_paper:
    input:
        paper_targets("mdlm_paper"),


rule remdm_paper:
    input:
        paper_targets("remdm_paper"),


rule gidd_paper:
    input:
        paper_targets("gidd_paper"),


# one target per sampler table (table_val_ppl, table_duo_curriculum, table_gidd_pu, table_gen_ppl and
# table_cost above are already rules without wildcards): `snakemake table_remdm` builds results/tables/remdm.*


rule table_distill:
    input:
        table_files("distill"),


rule table_remdm:
    input:
        table_files("remdm"),


rule table_sampler_speed:
    input:
        table_files("sampler_speed"),


rule table_semi_ar:
    input:
        table_files("semi_ar"),


rule table_self_correction:
    input:
        table_files("self_correction"),


# The papers' claims, each with its effect, 95% interval and verdict (config/claims.yaml, dlm.report.claims)


rule table_claims:
    input:
        unpack(claims_inputs),
    output:
        report(
            "results/tables/claims.csv",
            caption="../workflow_src/dlm/report/captions/claims.rst",
            category="Table data (CSV)",
            labels={"table": "claims"},
        ),
        "results/tables/claims.md",
        "results/tables/claims.tex",
        report(
            "results/tables/claims.html",
            caption="../workflow_src/dlm/report/captions/claims.rst",
            category="Tables",
            labels={"table": "claims"},
        ),
    params:
        entropy_margin=config["evaluation"]["entropy_margin"],
        single_seed=config["evaluation"]["claims_single_seed"],
    log:
        "logs/report/table_claims.log",
    conda:
        "../environment.yml"
    script:
        "../workflow_src/dlm/scripts/claims_table.py"
