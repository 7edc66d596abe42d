"""Code cites docs/architecture.md by section heading: every cited heading must exist.

A citation reads `docs/architecture.md, "Queue"` (several headings: `, "Sender", "Recipients"`).
Renaming a heading without the comments that cite it fails here, naming file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
CITATION = re.compile(r'architecture\.md((?:,? "[^"]+")+)')
HEADING = re.compile(r'"([^"]+)"')


def headings() -> set[str]:
    return {
        line[3:].strip() for line in DOC.read_text("utf-8").splitlines() if line.startswith("## ")
    }


def citations() -> list[tuple[str, int, str]]:
    found = []
    for folder in ("relay", "mailx", "tests", "bench", "demo"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
                for match in CITATION.finditer(line):
                    for title in HEADING.findall(match.group(1)):
                        found.append((f"{path.relative_to(ROOT)}:{number}", number, title))
    return found


def test_the_code_cites_the_architecture_document() -> None:
    assert len(citations()) >= 10  # the citations this test guards have not vanished


def test_every_cited_heading_exists() -> None:
    known = headings()
    missing = [f"{where}: {title!r}" for where, _, title in citations() if title not in known]
    assert not missing, f"no such heading in {DOC.name}: {missing}"
