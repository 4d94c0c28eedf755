"""The slice-policy grammar: which frames of a multi-frame file, series volume or MRNet exam to keep.

One grammar for every stage that picks slices (``modan-pacs cache --slices`` and the benchmark's
``slice_policy`` for ``acl``); both accept every form:

- ``middle``: the central frame, ``n // 2``;
- ``all``: every frame;
- ``even:N``: the centres of N equal bins, ``floor((i + 0.5) n / N)``, spread over the whole volume
  (avoids the often empty first and last slices);
- ``center:K``: the K contiguous central frames, starting at ``(n - K) // 2``.

``even:N`` and ``center:K`` keep all frames when N or K >= n. Text is matched case-insensitively
after stripping spaces. ``even:N`` was the cache's spelling and ``center:K`` the benchmark's before
they shared this module; configs using either stay valid.
"""

from __future__ import annotations

import math

from modan_pacs.errors import InputError

__all__ = ["SLICE_POLICY_FORMS", "parse_slice_policy", "select_slices"]

SLICE_POLICY_FORMS = "middle, all, even:N (N >= 1, spread), center:K (K >= 1, contiguous)"
"""The accepted forms, as error messages and help texts name them."""


def parse_slice_policy(policy: str) -> tuple[str, int]:
    """``"middle"`` -> ("middle", 1); ``"all"`` -> ("all", 0); ``"even:N"`` -> ("even", N);
    ``"center:K"`` -> ("center", K).

    Raises:
        InputError: any other text (the message lists :data:`SLICE_POLICY_FORMS`).
    """
    text = str(policy).strip().lower()
    if text in ("middle", "all"):
        return text, 1 if text == "middle" else 0
    kind, sep, count = text.partition(":")
    if sep and kind in ("even", "center"):
        try:
            n = int(count)
        except ValueError:
            n = 0
        if n >= 1:
            return kind, n
    raise InputError(f"slice policy {policy!r} is not one of: {SLICE_POLICY_FORMS}")


def select_slices(n_frames: int, policy: str) -> list[int]:
    """Indices (ascending) of the frames kept from ``n_frames`` by ``policy`` (grammar above).

    Raises:
        InputError: ``policy`` is not in the grammar.
    """
    kind, n = parse_slice_policy(policy)
    if n_frames < 1:
        return []
    if kind == "middle":
        return [n_frames // 2]
    if kind == "all" or n >= n_frames:
        return list(range(n_frames))
    if kind == "center":
        start = (n_frames - n) // 2
        return list(range(start, start + n))
    return [int(math.floor((i + 0.5) * n_frames / n)) for i in range(n)]
