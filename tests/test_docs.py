"""The docs cannot drift from the code: every registered choice of every axis, every preset
and every column of a report is documented; the README stays a short entry point."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from test_reduce import _study

from raydnas.axes import AXES
from raydnas.reduce import reduce

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _ticked(page: str) -> set[str]:
    """Every `code` span of a docs page."""
    return set(re.findall(r"`([^`\n]+)`", (DOCS / page).read_text()))


def test_every_choice_of_every_axis_is_documented_with_the_readme_table():
    methods = _ticked("methods.md")
    readme = (ROOT / "README.md").read_text()
    missing = [f"{axis}: {name}" for axis, reg in AXES.items() for name in reg.names()
               if name not in methods or f"`{name}`" not in readme]
    assert not missing, f"not in docs/methods.md or the README's axis table: {missing}"


def test_every_preset_is_documented():
    methods = _ticked("methods.md")
    presets = [p.name for p in sorted((ROOT / "configs").glob("*.yaml"))
               if not p.name.startswith("quickstart")]
    assert presets and not [p for p in presets if p not in methods and f"configs/{p}" not in methods]


def test_every_report_column_is_documented(tmp_path):
    exp = _study(tmp_path)
    reduce(exp)
    columns = pd.read_csv(Path(exp) / "report" / "report.csv").columns
    documented = _ticked("report.md")
    stat = re.compile(r"(.+)_(mean|std|min|max)$")
    metrics = documented if "`<metric>_mean`, `<metric>_std`, `<metric>_min`, `<metric>_max`" \
        in (DOCS / "report.md").read_text() else set()

    def known(c: str) -> bool:
        m = stat.match(c)
        return c in documented or "." in c or bool(m and m.group(1) in metrics)

    missing = [c for c in columns if not known(c)]
    assert not missing, f"report.csv columns not in docs/report.md: {missing}"


def test_the_readme_is_short_and_every_docs_page_is_in_the_site():
    assert len((ROOT / "README.md").read_bytes()) <= 10_000
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert [p for p in pages if p not in nav] == []
