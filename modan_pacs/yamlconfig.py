"""Load a YAML file into a pydantic model: one reader, one error format, one "did you mean".

Every config file of the project (benchmark, vocabulary, pretraining) goes through
:func:`read_yaml_mapping` and :func:`validate_model`, so a user sees the same one-line messages
whichever file is wrong:

- ``<file> does not exist`` (:class:`~modan_pacs.errors.InputError`: a path the user gave is missing);
- ``<file>: cannot read <what> (<reason>)``, ``<file>: not valid YAML (<parser message>)``,
  ``<file>: expected a mapping of <what> keys at top level, got list`` (:class:`ConfigError`);
- ``<file>: unknown <what> key 'a.b'; did you mean 'a.c'?`` (or the known keys) for a key
  the model does not have, at any depth (nested models, lists and dicts of models);
- ``<file>: a.b: <pydantic's or the validator's message>`` for a bad value.

When several errors are found the misspelt key is named first (a misspelling also makes the right
key "missing"). Models should set ``extra="forbid"`` for unknown keys to be caught.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from modan_pacs.errors import ConfigError, InputError

__all__ = [
    "did_you_mean",
    "fields_at",
    "format_validation_error",
    "load_yaml_model",
    "primary_error",
    "read_yaml_mapping",
    "validate_model",
]

M = TypeVar("M", bound=BaseModel)


def did_you_mean(name: str, choices: typing.Iterable[str]) -> str | None:
    """The closest of ``choices`` to a misspelt ``name`` (``difflib``, cutoff 0.6), or None."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return close[0] if close else None


def read_yaml_mapping(path: str | Path, *, what: str = "config") -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file is ``{}``).

    Raises:
        InputError: ``path`` does not exist.
        ConfigError: unreadable, not YAML, or not a mapping at top level.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what} ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {what} keys at top level, got {type(data).__name__}")
    return data


def _sub_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``Model``, ``Model | None``, ``list[Model]`` or ``dict[str, Model]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _sub_model(arg)
        if found is not None:
            return found
    return None


def fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at ``loc`` (list indexes and dict keys are stepped over)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            continue  # an index into a list or a key of a dict: stay on the element model
        inner = _sub_model(field.annotation)
        if inner is None:
            break
        model = inner
    return list(model.model_fields)


def primary_error(exc: ValidationError) -> dict[str, Any]:
    """The error :func:`format_validation_error` reports: the first misspelt key, else the first error."""
    errors = exc.errors()
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def format_validation_error(
    exc: ValidationError, model: type[BaseModel], source: str, *, what: str = "config"
) -> ConfigError:
    """One :class:`ConfigError` line for :func:`primary_error` (a misspelt key first), with a suggestion."""
    err = primary_error(exc)
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        choices = fields_at(model, loc[:-1])
        close = did_you_mean(str(loc[-1]), choices)
        section = ".".join(str(p) for p in loc[:-1])
        known = f"known keys in {section}" if section else "known keys"
        hint = (
            f"did you mean {'.'.join([*map(str, loc[:-1]), close])!r}?" if close else f"{known}: {', '.join(choices)}"
        )
        return ConfigError(f"{source}: unknown {what} key {key!r}; {hint}")
    message = str(err["msg"]).removeprefix("Value error, ")
    ctx_error = err.get("ctx", {}).get("error")
    if isinstance(ctx_error, ConfigError):
        message = str(ctx_error)
    where = f"{key}: " if loc else ""
    return ConfigError(f"{source}: {where}{message}")


def validate_model(model: type[M], data: dict[str, Any], source: str, *, what: str = "config") -> M:
    """``model.model_validate(data)`` with errors as one :class:`ConfigError` line naming ``source``.

    Exceptions the model's validators raise that are not ``ValueError`` (e.g. ``InputError``)
    pass through unchanged.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, model, source, what=what) from None


def load_yaml_model(
    model: type[M], path: str | Path, *, what: str = "config", overrides: dict[str, Any] | None = None
) -> M:
    """Read ``path`` (:func:`read_yaml_mapping`), update its top level with ``overrides``, validate.

    Raises:
        InputError: the file does not exist.
        ConfigError: unreadable file, bad YAML, unknown key (with a suggestion) or bad value.
    """
    data = read_yaml_mapping(path, what=what)
    data.update(overrides or {})
    return validate_model(model, data, str(path), what=what)
