"""Every Python example in README.md and docs/*.md runs as written.

The ```python blocks of one file run in order in one namespace, so a block may continue the
previous one (the docs say so where it does); each file starts afresh, in an empty temporary
working directory. An example that reads a file the user downloads gets a stand-in of the same
format here (`STAND_INS`), so the example itself runs unchanged.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _timm_b0_file(path: Path) -> None:
    """A timm-format `tf_efficientnet_b0` safetensors file (the real one is downloaded)."""
    from safetensors.numpy import save_file

    from tests.models.timm_reference import FIXTURE_DIR, synthetic_weights

    manifest = json.loads((FIXTURE_DIR / "tf_efficientnet_b0.json").read_text())["manifest"]
    save_file(synthetic_weights(manifest, seed=0), str(path))


STAND_INS = {"tf_efficientnet_b0.ns_jft_in1k.safetensors": _timm_b0_file}


def _blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


def test_the_docs_have_examples():
    counts = {p.name: len(_blocks(p)) for p in DOCUMENTS}
    assert counts["README.md"] >= 1 and counts["api.md"] >= 10, counts


@pytest.mark.parametrize("path", [p for p in DOCUMENTS if _blocks(p)], ids=lambda p: p.name)
def test_examples_run_as_written(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    for line, source in _blocks(path):
        for name, make in STAND_INS.items():
            if name in source and not (tmp_path / name).exists():
                make(tmp_path / name)
        code = compile(source, f"{path.relative_to(ROOT)}:{line}", "exec")
        exec(code, namespace)  # a failure names the file and the block's first line
