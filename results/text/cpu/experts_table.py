"""One table of the token baseline of every expert analysis under results/text/cpu/experts/ (written by run.sh):
per model and layer, the mean over experts of the baseline's detection F1, a random explanation's, and the
routing F1, with the mean share of held-out window positions routed to an expert (the base rate: a guess that
says "routed" everywhere has routing F1 2 s / (1 + s) at share s)."""

import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "experts")
lines = ["| model | layer | token baseline F1 | random tokens F1 | routing F1 | routed share |", "|---|---|---|---|---|---|"]
for name in ("top1", "top2", "top4", "moex"):
    res = json.loads((root / name / "experts.json").read_text())
    for lay in res["layers"]:
        share = sum(x["token_baseline"]["routing"]["routed_share"] for x in lay["experts"]) / len(lay["experts"])
        lines.append(f"| {name} | {lay['layer']} | {lay['mean_token_f1']:.3f} | {lay['mean_random_token_f1']:.3f} | "
                     f"{lay['mean_routing_f1']:.3f} | {share:.3f} |")
(root / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
