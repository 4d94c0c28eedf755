"""Config schema: precedence, typos with suggestions, shipped configs, schedules."""

from __future__ import annotations

import math

import pytest

from modan_pacs.errors import ConfigError
from modan_pacs.paths import config_path
from modan_pacs.train import load_config, parse_overrides, resolve_config
from modan_pacs.train.config import ScheduleConfig
from modan_pacs.train.schedule import lr_factor_fn


@pytest.mark.parametrize(
    "name", ["pretrain_modan.yaml", "pretrain_simclr.yaml", "pretrain_supervised.yaml", "pretrain_tiny.yaml"]
)
def test_shipped_configs_validate(name):
    load_config(config_path(name))


def test_paper_recipe_in_default_config():
    cfg = load_config()
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (
        "sgd",
        0.05,
        0.9,
        1e-4,
    )
    assert (cfg.train.batch_size, cfg.train.epochs) == (256, 1000)
    assert cfg.loss.name == "mulsupcon" and cfg.loss.params == {"temperature": 0.07, "threshold": 0.3}
    assert load_config(config_path("pretrain_simclr.yaml")).loss.params == {"temperature": 0.1}


def test_precedence_overrides_over_yaml_over_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\n  batch_size: 64\n")
    cfg = load_config(path, ["train.epochs=3", "loss.temperature=0.2", "schedule.milestones=[1, 2]"])
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 64 and cfg.optimizer.lr == 0.05
    assert cfg.loss.params["temperature"] == 0.2 and cfg.schedule.milestones == [1, 2]


@pytest.mark.parametrize(
    ("data", "overrides", "message"),
    [
        ({"train": {"epocs": 3}}, [], "unknown config key 'train.epocs'; did you mean 'train.epochs'"),
        ({}, ["optimiser.lr=0.1"], "did you mean 'optimizer'"),
        ({}, ["loss.temprature=0.1"], "did you mean 'temperature'"),
        ({}, ["loss.name=simclr"], "loss.name 'simclr' is unknown"),
        ({}, ["train.epochs=0"], "train.epochs"),
        ({}, ["loss.name=cross_entropy"], "needs a target"),
        ({}, ["train.epochs"], "not KEY=VALUE"),
    ],
)
def test_bad_configs_are_one_line_config_errors(data, overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        resolve_config(data, overrides)
    assert "\n" not in str(info.value)


def test_parse_overrides_types():
    assert parse_overrides(["a.b=1", "a.c=0.5", "d=off", "e=null"]) == {"a": {"b": 1, "c": 0.5}, "d": False, "e": None}


def test_warmup_step_and_cosine_factors():
    step = lr_factor_fn(
        ScheduleConfig(name="step", warmup_epochs=3, warmup_start_lr=0.01, milestones=[700, 800, 900]), 0.05, 10, 1000
    )
    assert step(0) == pytest.approx(0.2) and step(15) == pytest.approx(0.2 + 0.8 * 0.5) and step(30) == 1.0
    assert step(699 * 10) == 1.0 and step(700 * 10) == pytest.approx(0.1) and step(905 * 10) == pytest.approx(1e-3)
    cosine = lr_factor_fn(ScheduleConfig(name="cosine", warmup_epochs=0, min_lr=0.0), 0.1, 10, 10)
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0, abs=1e-12)
    assert cosine(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
