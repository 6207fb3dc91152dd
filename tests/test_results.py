"""The numbers of results/README.md are the committed files' own: its chess table against
results/chess/cpu/results.json, its probing table against the compare tables of results/text/cpu, its
perplexities against results/text/cpu/ppl.json."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "results"
README = (ROOT / "README.md").read_text()


def table(first_header: str) -> list[list[str]]:
    """The rows (cells) of the README table whose header starts with ``first_header``."""
    lines = README[README.index(f"| {first_header}"):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_the_chess_table_is_results_json():
    res = json.loads((ROOT / "chess" / "cpu" / "results.json").read_text())
    rows = {r["name"]: r for r in res["rows"]}
    names = {"GELU (dense)": "gelu", "Switch, upcycled": "switch", "MoE-X, upcycled": "moex",
             "dense continued": "dense-continued", "MoE-X from scratch": "moex-scratch"}
    got = table("row (ours, layer 3)")
    assert [r[0] for r in got] == list(names)
    for label, loss, legal, probe, cov, rec, p_cov, p_rec in got:
        r, paper = rows[names[label]], res["paper"][names[label]]
        assert loss == f"{r['val_loss']:.3f}" and legal == f"{100 * r['legal_move_rate']:.1f}%", label
        assert probe == f"{r['probe_accuracy']:.3f}" and cov == f"{r['coverage']:.3f}", label
        assert rec == f"{r['reconstruction']:.3f}", label
        assert (p_cov, p_rec) == (f"{paper[1]:.3f}", f"{paper[2]:.3f}"), label  # (val loss, coverage, reconstruction)
    router = res["router_analysis"]["moex"]
    assert f"r = {router['pearson_r_gate_vs_l0']:.3f}" in README
    assert f"mean l0 {round(rows['moex']['mean_l0'])} of 4,096" in README


def compare_rows(path: Path) -> dict[str, list[str]]:
    """A ``moex probe --compare`` table by run name: the cells of k = 1, 2, 4, ..., 64."""
    out = {}
    for line in path.read_text().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[Path(cells[0]).name] = cells[2:]
    return out


def test_the_probing_table_is_the_compare_tables():
    trained = compare_rows(ROOT / "text" / "cpu" / "compare.md")
    control = compare_rows(ROOT / "text" / "cpu" / "untrained-control" / "compare.md")
    names = {"dense": "dense", "top-1 of 8": "top1", "top-2 of 8": "top2", "top-4 of 8": "top4", "MoE-X": "moex"}
    got = table("model | k = 1 | k = 8")
    assert [r[0] for r in got] == list(names)
    for label, k1, k8, k64, ctl in got:
        t = trained[names[label]]
        assert [k1, k8, k64, ctl] == [t[0], t[3], t[6], control[names[label]][0]], label


def test_the_perplexities_are_ppl_json():
    rows = json.loads((ROOT / "text" / "cpu" / "ppl.json").read_text())["results"]
    ppl = {Path(r["checkpoint"]).name: r["ppl"] for r in rows}
    quoted = dict(re.findall(r"(dense|top-1|top-2|top-4|MoE-X) (\d+\.\d)", README[README.index("Perplexity on"):README.index("(`results/text/cpu/ppl.md`)")]))
    names = {"dense": "dense", "top-1": "top1", "top-2": "top2", "top-4": "top4", "MoE-X": "moex"}
    assert quoted == {k: f"{ppl[v]:.1f}" for k, v in names.items()}


def test_the_demo_spread_quoted_in_the_readme_is_the_committed_seeds():
    import sys

    sys.path.insert(0, str(ROOT / "demo"))
    from spread import committed_runs

    runs = committed_runs()
    assert sorted(r["seed"] for r in runs) == [0, 1, 2]
    readme = (ROOT.parent / "README.md").read_text().replace("\n", " ")
    for name, label in (("gelu", "GELU"), ("switch", "Switch"), ("moex", "MoE-X")):
        vals = [next(x for x in r["rows"] if x["name"] == name)["legal_move_rate"] for r in runs]
        assert f"{min(vals):.1%} - {max(vals):.1%} for {label}" in readme
    cov = [max(v) - min(v) for v in zip(*[[x["coverage"] for x in r["rows"]] for r in runs])]
    assert f"coverage by up to {max(cov):.3f}" in readme


def test_what_the_demo_says_of_its_spread_is_the_committed_seeds():
    import sys

    sys.path.insert(0, str(ROOT / "demo"))
    from spread import committed_runs

    from moex.experiments.chess import DEMO_SPREAD

    runs = committed_runs()
    spreads = {key: max(max(v) - min(v) for v in zip(*[[x[key] for x in r["rows"]] for r in runs]))
               for key in ("legal_move_rate", "coverage")}
    assert f"up to {100 * spreads['legal_move_rate']:.1f} points" in DEMO_SPREAD
    assert f"coverage by up to {spreads['coverage']:.3f}" in DEMO_SPREAD
