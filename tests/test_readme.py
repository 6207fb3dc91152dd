"""The README's Python snippets run, in order, in one namespace (in a scratch directory)."""

import os
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_snippets_run(tmp_path, capsys):
    blocks = python_blocks()
    assert len(blocks) >= 4
    cwd = os.getcwd()
    os.chdir(tmp_path)
    namespace: dict = {}
    try:
        for i, code in enumerate(blocks):
            exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
    finally:
        os.chdir(cwd)
        from moex.model.layer import _KINDS

        _KINDS.pop("relu2-dense", None)
    out = capsys.readouterr().out
    assert "torch.Size([2, 32, 32])" in out
    assert (tmp_path / "runs" / "moex" / "model.safetensors").exists()
    assert (tmp_path / "site" / "index.html").exists() and "4096 True" in out
