"""Every Python example of docs/sdk.md, run as a user would against a real node."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.conftest import Chain

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "sdk.md"
DOC_URL = "http://127.0.0.1:26600"
# Sections run in order against one node: later examples read what earlier ones wrote.
_SECTION = re.compile(r"^## (.+)$", re.M)
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)


def examples() -> list[tuple[str, str]]:
    text = DOC.read_text()
    found = []
    for match in _BLOCK.finditer(text):
        section = [s for s in _SECTION.finditer(text) if s.start() < match.start()][-1].group(1)
        found.append((f"{section.lower().replace(' ', '-')}-{len(found)}", match.group(1)))
    return found


@pytest.fixture(scope="module")
def workdir(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the doc says the examples' directory holds."""
    work = tmp_path_factory.mktemp("sdk-doc")
    shutil.copy2(chain.key_path, work / "client.key")
    shutil.copy2(chain.genesis_path, work / "genesis.toml")
    (work / "invoice.pdf").write_bytes(b"%PDF-1.7 invoice 7")
    (work / "contract.pdf").write_bytes(b"%PDF-1.7 contract v1")
    return work


def test_the_doc_has_examples_of_both_flavours() -> None:
    code = [block for _, block in examples()]
    assert len(code) >= 15
    assert sum("AsyncClient" in block for block in code) >= 6 and sum("Client(" in block for block in code) >= 8


@pytest.mark.parametrize("name, code", examples(), ids=[name for name, _ in examples()])
def test_example_runs(name: str, code: str, chain: Chain, workdir: Path) -> None:
    assert DOC_URL in code or "import" in code
    result = subprocess.run(
        [sys.executable, "-c", code.replace(DOC_URL, chain.url)],
        cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"example {name} failed:\n{code}\n{result.stderr}"
