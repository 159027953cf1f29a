"""The documentation covers the public API and the README points only inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import graphexec as gx

ROOT = Path(__file__).parents[1]


def test_every_public_name_has_a_reference_entry() -> None:
    """Each name in gx.__all__ is rendered by a ``::: graphexec.NAME`` line in docs/reference."""
    documented: set[str] = set()
    for page in (ROOT / "docs" / "reference").glob("*.md"):
        documented |= set(re.findall(r"^::: graphexec\.(\w+)$", page.read_text(), re.MULTILINE))
    assert [] == sorted(set(gx.__all__) - documented)


def test_readme_links_stay_in_the_repository() -> None:
    """Every relative link of the README names a file of the repository, inside it."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)", text)
    relative = [t for t in targets if "://" not in t and not t.startswith("mailto:")]
    assert relative, "the README links to the files it talks about"
    for target in relative:
        path = (ROOT / target).resolve()
        assert path.is_relative_to(ROOT.resolve()), target
        assert path.exists(), target


def test_decisions_page_includes_the_readme_section() -> None:
    """The Decisions page includes the README's semantics section, whose markers exist."""
    readme = (ROOT / "README.md").read_text()
    assert "<!-- --8<-- [start:semantics] -->" in readme
    assert "<!-- --8<-- [end:semantics] -->" in readme
    assert '--8<-- "README.md:semantics"' in (ROOT / "docs" / "decisions.md").read_text()
