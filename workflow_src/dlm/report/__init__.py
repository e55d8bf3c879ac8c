"""Result tables (CSV / Markdown / LaTeX) and figures built from the pipeline's metric JSONs."""

from dlm.report.tables import collect, gen_ppl_table, val_ppl_table, write_table

__all__ = ["collect", "write_table", "val_ppl_table", "gen_ppl_table"]


def __getattr__(name):
    # The figure module imports seaborn/matplotlib; load it only when asked for.
    if name == "gen_ppl_figure":
        from dlm.report.figures import gen_ppl_figure

        return gen_ppl_figure
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
