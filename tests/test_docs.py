"""Every Python example in README.md and docs/*.md runs as written.

Each fenced ```python block runs in a fresh interpreter (this one's, so with scaffold
installed) in an empty directory that sees the repository's ``examples/``, and must exit 0
within ``TIMEOUT`` seconds without a word on stderr. A block that needs root and network
namespaces says so in the Markdown, visibly, on the line right before its fence:
``<!-- needs root: REASON -->``; it runs where the namespace testbed can (CI runs as root) and
is reported as skipped elsewhere.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from scaffold.deploy.netns import available

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NEEDS_ROOT = re.compile(r"^<!-- needs root: (?P<reason>\S.*\S) -->$")
TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class Example:
    document: Path
    line: int  # of the opening fence, 1-based
    code: str
    needs_root: str | None  # why, for a block marked so

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def examples(document: Path) -> list[Example]:
    """The fenced ```python blocks of ``document``."""
    found = []
    lines = document.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() != "```python":
            index += 1
            continue
        start = index
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"{document.name}:{start + 1}: unclosed ```python block"
        marker = NEEDS_ROOT.match(lines[start - 1].strip()) if start > 0 else None
        code = "\n".join(lines[start + 1 : end]) + "\n"
        found.append(Example(document, start + 1, code, marker["reason"] if marker else None))
        index = end + 1
    return found


EXAMPLES = [example for document in DOCUMENTS for example in examples(document)]


def test_the_documents_have_examples_and_few_need_root() -> None:
    assert len(EXAMPLES) >= 5
    assert any(e.document.name == "README.md" and e.needs_root is None for e in EXAMPLES)
    # Examples run on any machine; root is for the namespace testbed alone.
    assert sum(1 for e in EXAMPLES if e.needs_root is not None) <= 2


def test_a_marker_needs_a_reason_and_counts_only_right_before_a_fence(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- needs root: namespaces -->\n```python\nraise SystemExit(1)\n```\n\n"
        "<!-- needs root: namespaces -->\n\n```python\nprint('runs')\n```\n"
        "<!-- needs root:  -->\n```python\nprint('runs too')\n```\n"
    )
    found = examples(doc)
    assert [(e.line, e.needs_root) for e in found] == [(2, "namespaces"), (8, None), (12, None)]
    assert found[1].code == "print('runs')\n"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs_as_written(example: Example, tmp_path: Path) -> None:
    if example.needs_root is not None and (reason := available()) is not None:
        pytest.skip(f"{example.needs_root} ({reason})")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    result = subprocess.run(
        [sys.executable, "-c", example.code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{example.name} exited {result.returncode}:\n{result.stderr[-3000:]}"
    # Running as written means cleanly too: no warning, no task left pending, no traceback.
    assert result.stderr == "", f"{example.name} wrote to stderr:\n{result.stderr[-3000:]}"


def _sections(document: Path) -> set[str]:
    headings = re.finditer(r"^#+ §(?P<n>[\d.]*\d)", document.read_text(encoding="utf-8"), re.M)
    return {m["n"] for m in headings}


def test_every_cited_section_exists() -> None:
    """``docs/NAME.md §N`` in code, tests and docs, and ``P§N`` (protocol.md) in the docs,
    name a heading that exists."""
    sections = {d.name: _sections(d) for d in (ROOT / "docs").glob("*.md")}
    sources = [*ROOT.glob("src/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("bench/*.py"), *DOCUMENTS]
    missing = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        cited = [(m[1] + ".md", m[2]) for m in re.finditer(r"docs/(\w+)\.md §([\d.]*\d)", text)]
        if path.suffix == ".md":
            cited += [("protocol.md", m[1]) for m in re.finditer(r"P§([\d.]*\d)", text)]
        missing += [
            f"{path.relative_to(ROOT)}: {doc} §{n}" for doc, n in cited if n not in sections.get(doc, set())
        ]
    assert sections["protocol.md"] and missing == []
