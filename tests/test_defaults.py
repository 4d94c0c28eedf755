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


#: what the shipped pretraining recipes deliberately set away from the model defaults (the library
#: default suits a notebook or a test: no DataLoader worker processes; the recipe a GPU machine)
RECIPE_CHOICES = {"data.workers": 8}
#: what each method's recipe sets for its loss and target (the only keys where methods differ)
METHOD_KEYS = {
    "pretrain_modan.yaml": {"loss.name": "mulsupcon"},
    "pretrain_simclr.yaml": {"loss.name": "ntxent"},
    "pretrain_supervised.yaml": {"loss.name": "cross_entropy", "supervised.label_group": "modality+anatomy"},
}


def test_shipped_pretraining_recipes_state_the_model_defaults():
    """Every value a method recipe states is the PretrainConfig default (or the loss class's own
    default for loss parameters), except the recipe choices and method keys listed above."""
    import inspect

    from modan_pacs.losses.registry import LOSSES
    from modan_pacs.train.config import PretrainConfig, flatten_config

    defaults = flatten_config(PretrainConfig().model_dump())
    for name, own in METHOD_KEYS.items():
        stated = flatten_config(yaml.safe_load(config_path(name).read_text()))
        loss_defaults = {
            f"loss.{p.name}": p.default
            for p in inspect.signature(LOSSES[stated["loss.name"]].__init__).parameters.values()
            if p.name != "self" and p.default is not inspect.Parameter.empty
        }
        expected = {**defaults, **loss_defaults, **RECIPE_CHOICES, **own}
        wrong = {k: (v, expected.get(k, "not a setting")) for k, v in stated.items() if expected.get(k, object()) != v}
        assert not wrong, f"{name}: stated value vs model default: {wrong}"
        assert {k for k in own} <= set(stated), name


def _stated_defaults(command) -> dict[str, str]:
    """option name -> the default its help text states: "(default X)", "(default = X)" or "X (default"."""
    import re
    import typing

    stated = {}
    for name, hint in typing.get_type_hints(command, include_extras=True).items():
        helps = [m.help for m in typing.get_args(hint) if getattr(m, "help", None)]
        text = helps[0] if helps else ""
        match = re.search(r"\(default(?: =)? ([^);,:]+)[);,]", text) or re.search(r"(\S+) \(default\b", text)
        if match:
            stated[name] = match.group(1).strip()
    return stated


def _same(stated: str, value) -> bool:
    if stated.startswith("--"):  # "(default = --lr)": unset in the model, taken from that option
        return value is None
    if isinstance(value, bool):
        return stated == ("on" if value else "off")
    if isinstance(value, float):
        return float(stated) == value
    return stated == str(value)


def test_help_texts_state_the_model_defaults():
    """A default written in an option's help text is the settings model's default for that field."""
    from cli.commands.benchmark import benchmark
    from cli.commands.proxy_study import proxy_study
    from modan_pacs.demo.proxy import ProxySettings

    checked = 0
    for command, defaults in ((benchmark, BenchmarkConfig().model_dump()), (proxy_study, vars(ProxySettings()))):
        for name, text in _stated_defaults(command).items():
            if name not in defaults:
                continue
            assert _same(text, defaults[name]), (
                f"{command.__name__} --{name}: help says {text!r}, the model {defaults[name]!r}"
            )
            checked += 1
    assert checked >= 15, checked


def test_pull_command_defaults_are_the_settings_defaults():
    """`modan-pacs pull`'s option defaults are PullSettings' and PacsSettings' (the CLI states none of its own)."""
    from cli.commands.pull import pull
    from modan_pacs.pacs.association import PacsSettings
    from modan_pacs.pacs.pull import PullSettings

    options = inspect.signature(pull).parameters
    pull_defaults = PullSettings()
    for name in ("method", "workers", "select", "seed", "chunk", "move_port", "dicomweb", "dicomweb_credentials"):
        assert options[name].default == getattr(pull_defaults, name), name
    pacs = PacsSettings.model_fields
    flags = {
        "calling_aet": "calling_aet",
        "timeout": "dimse_timeout",
        "connect_timeout": "connection_timeout",
        "retries": "retries",
        "backoff": "backoff",
    }
    for option, field in flags.items():
        assert options[option].default == pacs[field].default, option
    assert pacs["acse_timeout"].default == pacs["connection_timeout"].default  # --connect-timeout sets both
