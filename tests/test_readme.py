"""The README's Python examples run exactly as written (each ```python block, in order, in one
namespace per section, so later examples may use names from earlier ones)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _sections():
    text = README.read_text(encoding="utf-8")
    for match in re.finditer(r"<!-- section: (.*?) -->(.*?)<!-- end section", text, re.S):
        blocks = re.findall(r"```python\n(.*?)```", match.group(2), re.S)
        if blocks:
            yield pytest.param(blocks, id=match.group(1))


@pytest.mark.parametrize("blocks", list(_sections()))
def test_readme_examples_run(blocks):
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert namespace, "the section defined nothing"
