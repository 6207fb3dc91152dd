"""How much `moex demo`'s numbers move from seed to seed: the runs' results.json side by side, min-max per cell.

    for s in 0 1 2; do moex --threads 1 demo --seed $s --out WORK/demo-s$s; done
    python results/demo/spread.py WORK/demo-s0 WORK/demo-s1 WORK/demo-s2     # copies them here, writes spread.md
"""

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = (("val_loss", "val loss", "{:.3f}"), ("legal_move_rate", "legal moves", "{:.1%}"),
           ("probe_accuracy", "board probe", "{:.3f}"), ("coverage", "coverage", "{:.3f}"),
           ("reconstruction", "reconstruction", "{:.3f}"))


def spread_table(runs: list[dict]) -> str:
    names = [r["name"] for r in runs[0]["rows"]]
    lines = [f"Seeds {', '.join(str(r['seed']) for r in runs)} of `moex demo` (each: its own self-play games and "
             "initial weights); min - max over the seeds.\n",
             "| model | " + " | ".join(c[1] for c in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name in names:
        cells = []
        for key, _, fmt in COLUMNS:
            vals = [next(x for x in r["rows"] if x["name"] == name)[key] for r in runs]
            cells.append(f"{fmt.format(min(vals))} - {fmt.format(max(vals))}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def committed_runs() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(HERE.glob("seed*/results.json"))]


if __name__ == "__main__":
    for d in map(Path, sys.argv[1:]):
        res = json.loads((d / "results.json").read_text())
        dest = HERE / f"seed{res['seed']}"
        dest.mkdir(exist_ok=True)
        for name in ("results.json", "table1.md", "router.md"):
            shutil.copyfile(d / name, dest / name)
    (HERE / "spread.md").write_text(spread_table(committed_runs()))
    print((HERE / "spread.md").read_text())
