"""The prepared GPU campaign (benchmarks/gpu/part_a.sh, part_b.sh) dry-run on the CPU at tiny size: the
same scripts and code paths as on the device, so a lent GPU's minutes are not spent on a broken script."""

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from moex.experiments.chess import SCALES

REPO = Path(__file__).resolve().parents[1]


def run_part(tmp_path, *args):
    out = tmp_path / "out"
    env = {**os.environ, "MOEX_DRY_RUN": "1", "OUT": str(out), "WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "2"}
    r = subprocess.run(["bash", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_gpu_budget_scale_covers_every_row():
    sc = SCALES["gpu-budget"]
    assert sc.preset == "chess-8l" and not sc.train.get("compile") and not sc.rows  # every row, paper shapes
    groups = {}
    for line in (REPO / "benchmarks/gpu/part_b.sh").read_text().splitlines():
        if line.strip()[:2] in ("1)", "2)"):
            groups[line.strip()[0]] = set(line.split('"')[1].split())
    from moex.experiments.chess import ROWS

    assert groups["1"] | groups["2"] == {r.name for r in ROWS} | {"sae"} and not groups["1"] & groups["2"]
    assert {"gelu", "switch", "moex", "dense-continued"} <= groups["1"]  # the upcycled family has its parent


@pytest.mark.slow
def test_part_a_dry_run(tmp_path):
    out = run_part(tmp_path, "benchmarks/gpu/part_a.sh")
    report = json.loads((out / "train_step.json").read_text())
    assert set(report["variants"]) == {"eager-grouped", "eager-loop"} and report["grouped_mm"]
    assert "moex_over_dense_step_ratio" in report["variants"]["eager-grouped"]
    assert json.loads((out / "bsp_metrics.json").read_text())["features"] == 256
    assert len(list(out.iterdir())) <= 8  # what comes back from the device


@pytest.mark.slow
def test_part_b_dry_run(tmp_path):
    out = run_part(tmp_path, "benchmarks/gpu/part_b.sh", "1")
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["rows"]] == ["gelu", "moex"] and (out / "table1.md").exists()
    with tarfile.open(out / "rows.tgz") as t:
        assert {"rows/gelu.json", "rows/moex.json", "experiment.json"} <= set(t.getnames())
    assert len(list(out.iterdir())) <= 8
