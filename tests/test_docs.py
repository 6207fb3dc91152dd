"""Every code block of README.md, docs/*.md and results/README.md runs, page by page, in a scratch directory.

A page's blocks run in order in one scratch directory that holds links to the repository's ``tests/data``,
``results`` and ``benchmarks`` (what a reader in the repository root sees): ``python`` blocks are executed in
one namespace, ``bash`` blocks line by line, a ``moex ...`` command through ``moex.cli.main`` in this process (the function the
``moex`` script calls; one process start saved per command), anything else by bash. A block right after a line
``<!-- not run: REASON -->`` is skipped, and REASON must say why; a block right after ``<!-- slow -->`` runs in the slow
tier only (``-m slow``: the page runs again, whole). ``text`` blocks are output, not code.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "results" / "README.md"]
BLOCK = re.compile(r"(?:<!-- (?:not run: (?P<reason>[^>]*?)|(?P<slow>slow)) -->\n)?"
                   r"```(?P<lang>[a-z]*)\n(?P<code>.*?)```", re.S)
SHELL = set("|&;<>$`()")  # a moex line with one of these runs in bash; globs are expanded here
SHELL_STATE = set("$=")  # a block with a line that sets or reads a variable runs as one bash script


def in_process(line: str) -> bool:
    return line.startswith("moex ") and not SHELL & set(line)


def code_blocks(page: Path) -> list[tuple[str, str, str | None, bool]]:
    """(language, code, reason not run or None, slow) of each fenced block, in order."""
    return [(m["lang"], m["code"], m["reason"], bool(m["slow"])) for m in BLOCK.finditer(page.read_text())]


def shell_commands(code: str) -> list[str]:
    """A bash block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.append(line)
    return out


def run_command(line: str, cwd: Path, where: str) -> None:
    t0 = time.perf_counter()
    try:
        _run_command(line, cwd, where)
    finally:
        print(f"[{time.perf_counter() - t0:6.1f} s] {line}")


def _run_command(line: str, cwd: Path, where: str) -> None:
    if in_process(line):
        from moex.cli import main

        words = [w for word in shlex.split(line)
                 for w in (sorted(glob.glob(word, root_dir=cwd)) if "*" in word else [word])]
        here = os.getcwd()
        os.chdir(cwd)
        try:
            rc = main(words[1:])
        except SystemExit as e:  # argparse
            rc = e.code
        finally:
            os.chdir(here)
        assert rc == 0, f"{where}: `{line}` exited {rc}"
        return
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=cwd, env=env, capture_output=True, text=True)
    print(r.stdout, end="")
    assert r.returncode == 0, f"{where}: `{line}` exited {r.returncode}\n{r.stderr[-3000:]}"


def scratch_for(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "data").symlink_to(REPO / "tests" / "data")
    for name in ("results", "benchmarks"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def run_page(page: Path, tmp_path: Path, slow: bool = False) -> dict:
    cwd = scratch_for(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    blocks = code_blocks(page)
    for i, (lang, code, reason, slow_block) in enumerate(blocks, 1):
        where = f"{page.relative_to(REPO)} block {i}"
        if reason is not None:
            assert len(reason.strip()) > 10, f"{where}: a block not run must say why"
            continue
        if slow_block and not slow:
            continue
        if lang == "python":
            here = os.getcwd()
            os.chdir(cwd)
            try:
                exec(compile(code, where, "exec"), namespace)
            finally:
                os.chdir(here)
        elif lang == "bash":
            lines = shell_commands(code)
            if all(in_process(line) or not SHELL_STATE & set(line) for line in lines):
                for line in lines:
                    run_command(line, cwd, where)
            else:  # a block that keeps shell state (variables, cd) runs as one script
                run_command(code, cwd, where)
        else:
            assert lang == "text", f"{where}: a code block is python, bash or text (output), not {lang!r}"
    return namespace


def run_and_restore(page: Path, tmp_path: Path, slow: bool) -> None:
    from moex import mlp_kinds, unregister_mlp

    kinds = set(mlp_kinds())
    try:
        run_page(page, tmp_path, slow)
    finally:
        for name in set(mlp_kinds()) - kinds:  # a page that registers an MLP kind leaves the registry as it was
            unregister_mlp(name)


# what some pages' blocks must print (beyond exiting cleanly)
EXPECTED = {"README.md": ["4096 True", "torch.Size([2, 4, 4096]) 6"], "docs/models.md": ["torch.Size([2, 32, 32])"],
            "docs/browser.md": ["4096 True"]}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_page_code_blocks_run(page, tmp_path, capsys):
    run_and_restore(page, tmp_path, slow=False)
    out = capsys.readouterr().out
    for text in EXPECTED.get(str(page.relative_to(REPO)), []):
        assert text in out, f"{page.name}: {text!r} not printed"


SLOW_PAGES = [p for p in PAGES if any(b[3] for b in code_blocks(p))]


@pytest.mark.slow
@pytest.mark.parametrize("page", SLOW_PAGES, ids=[str(p.relative_to(REPO)) for p in SLOW_PAGES])
def test_page_code_blocks_run_with_the_slow_ones(page, tmp_path):
    run_and_restore(page, tmp_path, slow=True)


def test_every_page_has_code_and_every_skip_a_reason():
    for page in PAGES:
        blocks = code_blocks(page)
        assert blocks, f"{page}: no code block"
        for lang, _, reason, _ in blocks:
            assert reason is None or reason.strip(), page


def test_shell_commands_are_split_as_bash_reads_them():
    code = "moex a \\\n    --b c   # a comment\n\n# only a comment\necho '#not a comment'\n"
    assert shell_commands(code) == ["moex a --b c", "echo '#not a comment'"]
