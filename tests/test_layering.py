"""The package's import structure, read with ``ast``: layers import downwards only, the CLI is a leaf,
there are no import cycles (counting imports inside functions too), and the light modules stay light."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "moex"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def resolve(base: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    parts = base.split(".")
    parts = parts if is_package else parts[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([target] if target else []))


def imports_of(name: str) -> set[str]:
    """Every moex module ``name`` imports, at module level or inside functions."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = resolve(name, path.name == "__init__.py", node.level, node.module)
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in MODULES and t != name}
    return out


GRAPH = {name: imports_of(name) for name in MODULES}


def test_model_imports_no_higher_layer():
    higher = ("moex.data", "moex.training", "moex.interp", "moex.eval", "moex.experiments")
    bad = {(m, t) for m, ts in GRAPH.items() if m.startswith("moex.model") for t in ts if t.startswith(higher)}
    assert not bad, sorted(bad)


def test_data_imports_nothing_from_model_or_above():
    higher = ("moex.model", "moex.training", "moex.interp", "moex.eval", "moex.experiments")
    bad = {(m, t) for m, ts in GRAPH.items() if m.startswith("moex.data.") or m == "moex.data"
           for t in ts if t.startswith(higher)}
    assert not bad, sorted(bad)


def test_the_browser_is_the_top_layer():
    bad = {(m, t) for m, ts in GRAPH.items() if not m.startswith("moex.browse") and m not in ("moex.cli", "moex")
           for t in ts if t.startswith("moex.browse")}
    assert not bad, sorted(bad)


def test_export_is_imported_by_the_cli_only():
    bad = {(m, t) for m, ts in GRAPH.items() if not m.startswith("moex.export") and m not in ("moex.cli", "moex")
           for t in ts if t.startswith("moex.export")}
    assert not bad, sorted(bad)


def test_only_cli_modules_import_cli_code():
    assert not [m for m, ts in GRAPH.items() if "moex.cli" in ts], "nothing may import moex.cli"
    cli = {m for m in MODULES if m.endswith(".cli") or m in ("moex.cli", "moex.cliutil")}
    bad = {(m, t) for m, ts in GRAPH.items() if m not in cli for t in ts if t in cli}
    assert not bad, sorted(bad)


def test_no_import_cycles():
    # Tarjan's strongly connected components; a component of more than one module is a cycle
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    # a package's __init__ importing its own submodules is how packages work, not a cycle
    for name in list(GRAPH):
        GRAPH[name] = {t for t in GRAPH[name] if not name.startswith(t + ".")}
    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_light_modules_do_not_import_torch():
    code = ("import sys, moex, moex.artifacts, moex.config, moex.errors, moex.data.chess.vocab; "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_flat_public_api():
    import moex

    assert set(moex.__all__) >= {"GPT", "make_config", "load_model", "train", "Trainer", "collect", "score_chess",
                                 "bsp_metrics", "SAE", "register_mlp", "Site", "site_for", "run_chess_experiment"}
    for name in moex.__all__:
        assert getattr(moex, name) is not None, name
