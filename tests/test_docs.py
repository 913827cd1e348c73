"""docs/ is the project's own account: the claims page is current, every citation in code and
reports points into docs/, and nothing cites documents the repository does not hold."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from verify.docs import CLAIMS_PAGE, ROOT, claims_markdown


def _tracked_text_files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:   # not a git checkout: every file below the root
        paths = [p for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]
    else:
        paths = [ROOT / line for line in out.stdout.splitlines()]
    return [p for p in paths if p.suffix in (".py", ".md", ".json", ".toml", ".cfg", ".txt", "")
            and p.is_file() and p.stat().st_size < 2_000_000]


def test_claims_page_is_current():
    assert CLAIMS_PAGE.read_text(encoding="utf-8") == claims_markdown(), (
        "docs/claims.md is stale: run `make docs`")


def test_nothing_cites_documents_the_repository_does_not_hold():
    """(reports/ is generated: the committed report is checked after it is regenerated.)"""
    # the private notes' names are put together here, so that this file does not cite them
    spec, design, folder = "SP" + "EC", "DES" + "IGN", ".." + "/" + "shared"
    pattern = re.compile("|".join(re.escape(s) for s in (f"{spec}.md", f"{design}.md", folder,
                                                          f"{spec} §")))
    offenders = [str(p.relative_to(ROOT)) for p in _tracked_text_files()
                 if pattern.search(p.read_text(encoding="utf-8", errors="replace"))
                 and p.parts[len(ROOT.parts)] != "reports"]
    assert offenders == []


def test_every_citation_of_the_mathematics_resolves():
    """'docs/mathematics.md §5a' anywhere in the code, the claims' sections and the generated pages
    name a section that docs/mathematics.md has (anchors s0 … s10, s5a)."""
    from verify.registry import all_claims

    page = (ROOT / "docs" / "mathematics.md").read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="s(\d+[a-z]?)"></a>', page))
    cited = set()
    for p in _tracked_text_files():
        text = p.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"docs/mathematics\.md,? ((?:§\s*\d+[a-z]?(?:[,–\- ]+)?)+)", text):
            cited.update(re.findall(r"§\s*(\d+[a-z]?)", m.group(1)))
        cited.update(re.findall(r"mathematics\.md#s(\d+[a-z]?)", text))
    for c in all_claims().values():
        cited.update(re.findall(r"§\s*(\d+[a-z]?)", c.section))
    assert cited and cited <= anchors, sorted(cited - anchors)


def test_mathematics_names_every_claim_and_only_claims_that_exist():
    """Each section's 'Checked by' line names registered claims, and every claim is named."""
    from verify.registry import all_claims

    page = (ROOT / "docs" / "mathematics.md").read_text(encoding="utf-8")
    claims = set(all_claims())
    checked_by = re.findall(r"\*\*Checked by:?\*\*:?(.*?)(?:\n\n|\*\*In the code)", page, re.S)
    named = {n for block in checked_by for n in re.findall(r"`([a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*)`", block)}
    assert claims <= named, sorted(claims - named)
    unknown = {n for n in named - claims if "-" in n or n in ("lemma1", "lemma2", "lemma3")}
    assert unknown == set(), sorted(unknown)
