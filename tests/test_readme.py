"""The README's and docs' Python examples run exactly as written (each ```python block, in
order, in one namespace per `##` section, so later examples may use names from earlier ones)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "checker.md"]


def _sections():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for title, body in re.findall(r"^## (.*?)\n(.*?)(?=^## |\Z)", "\n" + text, re.S | re.M):
            blocks = re.findall(r"```python\n(.*?)```", body, re.S)
            if blocks:
                yield pytest.param(page, blocks, id=f"{page.name}:{title.strip()}")


SECTIONS = list(_sections())


def test_there_are_examples():
    assert len(SECTIONS) >= 2


@pytest.mark.parametrize("page, blocks", SECTIONS)
def test_examples_run(page, blocks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # examples that write files write them here
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)  # noqa: S102
    assert namespace, "the section defined nothing"
