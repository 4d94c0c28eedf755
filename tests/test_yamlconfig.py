"""modan_pacs.yamlconfig: one YAML -> pydantic loader, one error format, suggestions at any depth."""

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from modan_pacs.errors import ConfigError, InputError
from modan_pacs.yamlconfig import did_you_mean, fields_at, load_yaml_model, read_yaml_mapping


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Entry(_Strict):
    name: str
    codes: list[str] = []


class Train(_Strict):
    epochs: int = Field(10, ge=1)
    mode: Literal["fast", "slow"] = "fast"


class Root(_Strict):
    train: Train = Train()
    entries: list[Entry] = []
    groups: dict[str, Entry] = {}
    seed: int = 0


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_loads_and_applies_overrides(tmp_path):
    cfg = load_yaml_model(Root, _write(tmp_path, "train: {epochs: 3}\nentries: [{name: a}]\n"), overrides={"seed": 7})
    assert (cfg.train.epochs, cfg.entries[0].name, cfg.seed) == (3, "a", 7)
    assert load_yaml_model(Root, _write(tmp_path, "")) == Root()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("traim: {}\n", "c.yaml: unknown thing key 'traim'; did you mean 'train'?"),
        ("train: {epocs: 2}\n", "unknown thing key 'train.epocs'; did you mean 'train.epochs'?"),
        (
            "entries: [{name: a}, {name: b, kodes: [x]}]\n",
            "unknown thing key 'entries.1.kodes'; did you mean 'entries.1.codes'?",
        ),
        ("groups: {g: {name: a, codez: []}}\n", "unknown thing key 'groups.g.codez'; did you mean 'groups.g.codes'?"),
        ("zzz: 1\n", "unknown thing key 'zzz'; known keys: train, entries, groups, seed"),
        ("train: {epochs: 0}\n", "c.yaml: train.epochs: Input should be greater than or equal to 1"),
        ("train: {mode: medium}\n", "c.yaml: train.mode: Input should be 'fast' or 'slow'"),
    ],
)
def test_errors_are_one_line_naming_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_yaml_model(Root, _write(tmp_path, text), what="thing")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_file_errors(tmp_path):
    with pytest.raises(InputError, match="thing file .*absent.yaml does not exist"):
        read_yaml_mapping(tmp_path / "absent.yaml", what="thing")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml_mapping(_write(tmp_path, "a: [1, 2\n"))
    with pytest.raises(ConfigError, match="expected a mapping of config keys at top level, got list"):
        read_yaml_mapping(_write(tmp_path, "- 1\n- 2\n"))


def test_misspelt_key_is_named_before_the_missing_one(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'entries.0.nam'; did you mean 'entries.0.name'"):
        load_yaml_model(Root, _write(tmp_path, "entries: [{nam: a}]\n"))


def test_helpers():
    assert did_you_mean("epocs", ["epochs", "seed"]) == "epochs"
    assert did_you_mean("zzz", ["epochs"]) is None
    assert fields_at(Root, ("entries", 3)) == ["name", "codes"]
    assert fields_at(Root, ("train",)) == ["epochs", "mode"]
