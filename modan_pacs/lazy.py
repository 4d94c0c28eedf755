"""Names of a package imported on first use (PEP 562), so that importing the package stays cheap.

Used where a light entry point (a header-reading worker, the vocabulary check before ``index``
starts its workers) must not pay for pandas through the package's ``__init__``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(
    package: str, where: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``where`` maps each public name to its submodule.

    A name is imported from ``package.<submodule>`` on first access and then cached in
    ``namespace`` (the package's ``globals()``); an unknown name raises ``AttributeError``.
    """

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *where])

    return __getattr__, __dir__
