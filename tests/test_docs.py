"""The docs hold together: every relative link in the README and docs/ resolves to a file, and
every ``#anchor`` to a heading of that file (GitHub's slugs)."""

from __future__ import annotations

import re
from pathlib import Path

from .harness import ROOT

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("*/README.md")),
            *sorted(ROOT.glob("infra/*/README.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text())
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(text):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _broken(doc: Path) -> list[str]:
    broken = []
    for target in _LINK.findall(_FENCE.sub("", doc.read_text())):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto: - not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


def test_every_relative_link_and_anchor_in_the_docs_resolves():
    problems = {doc.relative_to(ROOT).as_posix(): b for doc in _docs() if (b := _broken(doc))}
    assert problems == {}


def test_the_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path: Path):
    (tmp_path / "other.md").write_text("# A title\n\n## Second part: details\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](other.md#second-part-details) [gone](nope.md) [bad](other.md#missing) [web](https://x.y)\n"
                   "```\n[in code](ignored.md)\n```\n")
    assert _broken(doc) == ["nope.md: no such file", "other.md#missing: no heading #missing in other.md"]


_TEST_REF = re.compile(r"(test_[a-z0-9_]+)\.py::(test_[a-z0-9_]+)")


def test_every_test_the_docs_name_exists():
    """The guarantees table and the docs name the test behind each promise: each must exist."""
    defined = {(p.stem, m) for p in (ROOT / "tests").glob("test_*.py")
               for m in re.findall(r"^(?:async )?def (test_\w+)", p.read_text(), re.M)}
    named = {ref for doc in _docs() for ref in _TEST_REF.findall(doc.read_text())}
    assert named, "the docs name no test at all: the pattern is wrong"
    assert sorted(f"{f}.py::{t}" for f, t in named - defined) == []


def test_the_section_the_recovery_text_points_to_exists_and_says_how_to_restore_a_raw_file():
    from cascade.runtime.recovery import RESTORE_DOC

    file, _, heading = RESTORE_DOC.partition(", ")
    doc = ROOT / file
    assert doc.exists(), RESTORE_DOC
    assert _slug(heading.strip('"')) in _anchors(doc), RESTORE_DOC
    section = doc.read_text().split(f"## {heading.strip(chr(34))}", 1)[1].split("\n## ", 1)[0]
    assert "cascade up --start" in section and "cascade status --date" in section, section
