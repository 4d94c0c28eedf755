"""CT display windows per anatomy (center, width in Hounsfield units), user-configurable.

The defaults are the usual radiology presets: brain (40, 80), lung (-600, 1500), bone-dominated
regions (400, 1800), soft tissue (40, 400) elsewhere and for unknown anatomy (``default``). A YAML
file ``{anatomy: [center, width], default: [center, width]}`` overrides or extends them; anatomy
names must be anatomies of the vocabulary.
"""

from __future__ import annotations

from pathlib import Path

from modan_pacs.errors import ConfigError
from modan_pacs.yamlconfig import did_you_mean, read_yaml_mapping

__all__ = ["DEFAULT_CT_WINDOWS", "CtWindows", "load_ct_windows"]

DEFAULT_CT_WINDOWS: dict[str, tuple[float, float]] = {
    "default": (40.0, 400.0),
    "brain": (40.0, 80.0),
    "lung": (-600.0, 1500.0),
    "abdomen": (40.0, 400.0),
    "pelvis": (40.0, 400.0),
    "neck": (40.0, 400.0),
    "heart": (40.0, 400.0),
    "spine": (400.0, 1800.0),
    "hip": (400.0, 1800.0),
    "knee": (400.0, 1800.0),
    "shoulder": (400.0, 1800.0),
    "ankle-foot": (400.0, 1800.0),
    "extremity": (400.0, 1800.0),
}


class CtWindows:
    """Lookup of a CT window by canonical anatomy; ``window(None)`` gives ``default``."""

    def __init__(self, table: dict[str, tuple[float, float]]) -> None:
        if "default" not in table:
            raise ConfigError("CT window table needs a 'default' entry")
        self.table = dict(table)

    def window(self, anatomy: str | None) -> tuple[float, float]:
        return self.table.get(anatomy, self.table["default"]) if anatomy else self.table["default"]

    def as_dict(self) -> dict[str, list[float]]:
        return {k: [float(v[0]), float(v[1])] for k, v in sorted(self.table.items())}


def load_ct_windows(path: str | Path | None = None, anatomies: list[str] | None = None) -> CtWindows:
    """The default table, overridden by the YAML file at ``path`` when given.

    Raises:
        InputError: the file does not exist.
        ConfigError: bad YAML, a value that is not ``[center, width]`` with width >= 1, or an
            anatomy unknown to ``anatomies`` (with a "did you mean").
    """
    table = dict(DEFAULT_CT_WINDOWS)
    if path is None:
        return CtWindows(table)
    path = Path(path)
    data = read_yaml_mapping(path, what="window config")  # a mapping anatomy -> [center, width]
    known = set(anatomies or []) | {"default"}
    for key, value in data.items():
        if anatomies is not None and key not in known:
            hint = did_you_mean(str(key), sorted(known))
            raise ConfigError(
                f"{path}: {key!r} is not an anatomy of the vocabulary" + (f"; did you mean {hint!r}?" if hint else "")
            )
        if not (
            isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
        ):
            raise ConfigError(f"{path}: {key}: expected [center, width]; got {value!r}")
        if value[1] < 1:
            raise ConfigError(f"{path}: {key}: window width must be >= 1; got {value[1]}")
        table[str(key)] = (float(value[0]), float(value[1]))
    return CtWindows(table)
