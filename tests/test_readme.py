"""The Python examples of the README and of docs/*.md run as written.

In the docs, ```python blocks are complete examples (run here); ```py blocks are
signatures or fragments that need objects from elsewhere (a Keras layer, an ONNX model).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


BLOCKS = _blocks(README)
DOC_BLOCKS = [
    (f"{doc.name} python block {k}", code)
    for doc in sorted((ROOT / "docs").glob("*.md"))
    for k, code in enumerate(_blocks(doc))
]


def _run(code: str, name: str) -> None:
    if "import torch" in code:
        pytest.importorskip("torch")
    exec(compile(code, name, "exec"), {})


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    _run(BLOCKS[index], f"README.md python block {index}")


def test_docs_have_python_examples():
    assert len(DOC_BLOCKS) >= 5


@pytest.mark.parametrize(("name", "code"), DOC_BLOCKS, ids=[n for n, _ in DOC_BLOCKS])
def test_docs_example_runs(name, code):
    _run(code, name)
