"""The README's results section is the claims table of the last `make run`: `dlm readme-results` copies
`results/tables/claims.md` (and one figure) between the README's markers, with the host and date it was made
on. Nothing in that section is written by hand."""

from __future__ import annotations

import datetime
import os
import platform
import shutil
from pathlib import Path

from dlm.utils import write_text

START = "<!-- claims:start (written by `dlm readme-results` from results/tables/claims.md; do not edit) -->"
END = "<!-- claims:end -->"


def host_description() -> str:
    """CPU model and core count of this machine (what a reader needs to compare timings)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def update_readme(readme: str | os.PathLike, claims_md: str | os.PathLike, figure: str | os.PathLike | None = None,
                  figure_dest: str | os.PathLike | None = None, when: str | None = None) -> str:
    """Replace the block between START and END in `readme` by the claims table (and a link to `figure`,
    copied to `figure_dest`, a path relative to the README's folder). ValueError when the markers are missing
    or the table is empty. Returns the new README text (written atomically)."""
    readme, claims_md = Path(readme), Path(claims_md)
    text = readme.read_text()
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise ValueError(f"{readme}: no results block (expected the lines {START!r} ... {END!r})")
    table = claims_md.read_text().strip()
    if table.count("\n") < 2:
        raise ValueError(f"{claims_md}: the claims table has no rows")
    when = when or datetime.date.today().isoformat()
    block = [START, "", f"Made by `make run` on {when}, {host_description()} "
                        f"([`results/tables/claims.md`](results/tables/claims.md); verdict rule below).", "", table]
    if figure is not None and figure_dest is not None:
        dest = readme.parent / figure_dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(figure, dest)
        block += ["", f"![{Path(figure).stem}]({Path(figure_dest).as_posix()})"]
    block += ["", END]
    new = text[:text.index(START)] + "\n".join(block) + text[text.index(END) + len(END):]
    write_text(readme, new)
    return new
