"""One config story: every config class checks keys and types the same way; one override syntax."""

import json
import re

import pytest

from moex import ConfigError, ModelConfig, SAEConfig, Scale, SelfPlayConfig, TrainConfig
from moex.cli import main
from moex.config import parse_overrides, read_settings, split_settings

# (class, a key of type int, a key of type str) for every config a user sets
CONFIGS = [(ModelConfig, "d_model", "mlp"), (TrainConfig, "max_steps", "device"), (SAEConfig, "d_sae", "kind"),
           (SelfPlayConfig, "nodes", "engine"), (Scale, "steps", "preset")]


@pytest.mark.parametrize("cls,int_key,str_key", CONFIGS, ids=[c[0].__name__ for c in CONFIGS])
def test_every_config_rejects_unknown_keys_and_wrong_types_alike(cls, int_key, str_key):
    with pytest.raises(ConfigError) as e:
        cls.from_dict({"no_such_key": 1}, source="f.json")
    assert str(e.value) == f"f.json: unknown {cls.label} key(s) 'no_such_key'"
    with pytest.raises(ConfigError) as e:
        cls.from_dict({int_key: "ten"}, source="f.json")
    assert str(e.value) == f"f.json: {cls.label} key {int_key!r} must be int, got 'ten'"
    with pytest.raises(ConfigError) as e:
        cls.from_dict({int_key: True}, source="f.json")  # a bool is not an int here
    assert "must be int" in str(e.value)
    with pytest.raises(ConfigError, match=rf"^f.json: {re.escape(cls.label)} key {str_key!r} must be str, got 3$"):
        cls.from_dict({str_key: 3}, source="f.json")
    # direct construction is checked too (the class name is the source)
    with pytest.raises(ConfigError, match=f"^{cls.__name__}: "):
        cls(**{int_key: "ten"})


def test_round_trip_and_replace():
    t = TrainConfig.from_dict({"lr": 1, "max_steps": 5})
    assert t.lr == 1.0 and isinstance(t.lr, float)  # an int is a valid float
    assert TrainConfig.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    assert t.replace(max_steps=7).max_steps == 7
    with pytest.raises(ConfigError, match="must be positive"):
        t.replace(log_interval=0)


def test_override_syntax_and_config_files(tmp_path):
    assert parse_overrides(["a=1", "b=x", "c=[1, 2]", "d=true", "e={\"k\": 1}"]) == \
        {"a": 1, "b": "x", "c": [1, 2], "d": True, "e": {"k": 1}}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["oops"])
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"model": {"d_model": 64}, "train": {"lr": 0.1}, "seed": 3}))
    s = read_settings(f, ["lr=0.2"], sections=("model", "train"))
    assert s == {"d_model": 64, "lr": 0.2, "seed": 3}
    model, train = split_settings(s, ModelConfig, TrainConfig)
    assert model == {"d_model": 64} and train == {"lr": 0.2, "seed": 3}
    with pytest.raises(ConfigError, match="unknown key 'nope' \\(not a model or train setting\\)"):
        split_settings({"nope": 1}, ModelConfig, TrainConfig)
    f.write_text("[1]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        read_settings(f, [])


@pytest.mark.parametrize("argv", [
    ["model", "summary", "--preset", "tiny", "d_model=many"],
    ["data", "chess", "generate", "--games", "1", "--out", "{tmp}/g", "nodes=many"],
    ["experiment", "chess", "--out", "{tmp}/e", "steps=many"],
    ["demo", "--out", "{tmp}/d", "steps=many"],
    ["train", "--preset", "tiny", "--out", "{tmp}/r", "--data", "{tmp}", "max_steps=many"],
    ["sae", "train", "--checkpoint", "{tmp}", "--data", "{tmp}", "--out", "{tmp}/s", "d_sae=many"],
])
def test_every_settings_command_reports_a_wrong_type_in_one_line(argv, tmp_path, capsys):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moex: error: ") and "must be int, got 'many'" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_settings_from_a_config_file_on_the_command_line(tmp_path, capsys):
    f = tmp_path / "m.json"
    f.write_text(json.dumps({"n_experts": 4}))
    assert main(["model", "summary", "--preset", "tiny", "--mlp", "moex", "--json", "--config", str(f)]) == 0
    assert json.loads(capsys.readouterr().out)["layers"][0]["n_experts"] == 4
