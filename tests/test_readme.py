"""The README stays short and true: its results block is the generated claims table (dlm.report.readme), every
link points at a file of the repository, and its two commands are the ones CI and users run."""

import re
from pathlib import Path

import pytest

from dlm.report.readme import END, START, update_readme

ROOT = Path(__file__).resolve().parents[1]


def test_update_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{START}\nold table\n{END}\n\nafter\n")
    claims = tmp_path / "claims.md"
    claims.write_text("| Claim | Verdict |\n|:--|:--|\n| a beats b | holds |\n")
    fig = tmp_path / "f.png"
    fig.write_bytes(b"\x89PNG fake")
    new = update_readme(readme, claims, fig, "docs/figures/f.png", when="2026-12-06")
    assert new.startswith("# Title\n\nbefore\n\n" + START) and new.endswith(END + "\n\nafter\n")
    assert "old table" not in new and "| a beats b | holds |" in new and "2026-12-06" in new
    assert "![f](docs/figures/f.png)" in new
    assert (tmp_path / "docs/figures/f.png").read_bytes() == b"\x89PNG fake"
    assert update_readme(readme, claims, when="2026-12-06").count(START) == 1  # idempotent: one block


def test_update_readme_refuses_missing_markers_or_empty_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no block\n")
    claims = tmp_path / "claims.md"
    claims.write_text("| Claim | Verdict |\n|:--|:--|\n| x | holds |\n")
    with pytest.raises(ValueError, match="no results block"):
        update_readme(readme, claims)
    readme.write_text(f"{START}\n{END}\n")
    claims.write_text("| Claim | Verdict |\n")
    with pytest.raises(ValueError, match="no rows"):
        update_readme(readme, claims)


def test_repository_readme_is_short_and_its_links_exist():
    text = (ROOT / "README.md").read_text()
    assert START in text and END in text
    assert len(text.splitlines()) <= 220, "the README is for five minutes; move details into docs/"
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if target.startswith(("http://", "https://")) or target.startswith("results/"):
            continue  # results/ exists after `make run`
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
    assert "make run" in text and "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_docs_pages_link_back_and_exist():
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://")) or "results/" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
