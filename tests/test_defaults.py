"""Defaults live in the settings models: the shipped YAML and the CLI's option defaults must agree
with them (a change of a model default that forgets one of these fails here)."""

import inspect

import yaml

from modan_pacs.bench.config import BenchmarkConfig
from modan_pacs.paths import config_path
from modan_pacs.pixels.build import CacheSettings


def test_shipped_benchmark_yaml_states_every_field_with_the_model_default():
    shipped = yaml.safe_load(config_path("benchmark.yaml").read_text())
    defaults = BenchmarkConfig().model_dump()
    assert set(shipped) == set(defaults)
    assert BenchmarkConfig.model_validate(shipped).model_dump() == defaults


def test_cache_command_defaults_are_the_cache_settings_defaults():
    from cli.commands.cache import cache

    options = inspect.signature(cache).parameters
    model = CacheSettings()
    for name in CacheSettings.model_fields:
        if name == "ct_windows":  # read from --window-config, not an option of its own
            continue
        if name == "ct_window":  # the flag pair --ct-window-by-anatomy / --ct-window-from-header
            assert options["ct_window_by_anatomy"].default is (model.ct_window == "anatomy")
            continue
        assert options[name].default == getattr(model, name), name
