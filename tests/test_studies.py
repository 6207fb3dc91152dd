"""The paper's chess studies: their model grids (default tier) and each study end to end at tiny scale
(slow tier: trains, scores, writes study.json / .md / .png)."""

import json

import numpy as np
import pytest
import torch

from moex import GPT, make_config, summarize_config
from moex.experiments.chess import SCALES
from moex.experiments.studies import STUDIES, encoder_rows, run_study, study_runs


def test_scaling_grid_matches_activated_parameters():
    sc = SCALES["tiny"]
    runs = {r.name: r for r in study_runs("scaling", sc)}
    active = {name: summarize_config(sc.preset, r.mlp, **r.overrides)["active_params"] for name, r in runs.items()}
    for k, a in ((1, 4), (2, 8), (4, 16)):  # k experts of width 4d activate what a dense 4kd MLP does
        assert active[f"moex-k{k}"] == active[f"dense-a{a}"]
        assert active[f"switch-k{k}"] - active[f"dense-a{a}"] == 4 * 8 * 128  # + the linear router, 4 layers


def test_width_and_sparsity_grids():
    sc = SCALES["tiny"]
    width = study_runs("width", sc)
    assert {(r.x["d"], r.x["alpha"]) for r in width} == {(32, 4), (64, 4), (128, 4), (128, 2), (128, 8), (128, 16)}
    for r in width:  # every model of the grid builds
        assert make_config(sc.preset, r.mlp, **r.overrides).code_width == r.x["d"] * r.x["alpha"]
    sparsity = study_runs("sparsity", sc)
    assert [r.overrides.get("topk_k") for r in sparsity if r.mlp == "topk"] == [16, 64, 32, 128]


def test_encoder_rows_are_the_expert_units_input_weights():
    torch.manual_seed(0)
    model = GPT(make_config("tiny", "moex", n_layer=1, n_experts=4, d_expert=8))
    x, expert = encoder_rows(model, 0)
    w = model.h[0].mlp.w_enc.detach()
    assert x.shape == (4 * 8, 128) and np.array_equal(expert, np.repeat(np.arange(4), 8))
    assert np.allclose(x[3 * 8 + 5], w[3, :, 5].numpy())  # expert 3, unit 5


@pytest.fixture(scope="module")
def study_out(tmp_path_factory):
    return tmp_path_factory.mktemp("studies")


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_study_end_to_end_at_tiny_scale(study, study_out, chess_games_dir):
    settings = {"steps": 10, "games": 60, "eval_games": 20, "sae_steps": 20}
    res = run_study(study, study_out, "tiny", settings=settings, games_dir=str(chess_games_dir))
    sdir = study_out / study
    assert (sdir / "study.png").stat().st_size > 10_000 and "Paper: Fig." in (sdir / "study.md").read_text()
    saved = json.loads((sdir / "study.json").read_text())
    assert saved["paper_trend"] == res["paper_trend"] and len(saved["rows"]) == len(res["rows"])
    for r in res["rows"]:
        assert 0 <= r["coverage"] <= r["coverage_per_bsp"] <= 1 and 0 <= r["reconstruction"] <= 1, r
    if study == "dynamics":
        assert all(len(c) >= 2 for c in res["curves"].values())
    if study == "layers":
        assert all(len(p) == 4 for p in res["per_layer"].values())
    if study == "tsne":
        assert set(res["maps"]) == {"switch", "moex-relu-linear", "moex"}
    if study in ("width", "scaling"):
        assert res["rows"][-1]["name"] == "sae"
    again = run_study(study, study_out, "tiny", settings=settings, games_dir=str(chess_games_dir))  # reuses all
    assert [r["coverage"] for r in again["rows"]] == [r["coverage"] for r in res["rows"]]
