"""The network flags `index --pacs` and `pull` share, as :class:`~modan_pacs.pacs.association.PacsSettings` fields."""

from __future__ import annotations


def network_settings(*, connect_timeout: float, timeout: float, retries: int, backoff: float) -> dict[str, float | int]:
    """``--connect-timeout`` (TCP connect and association), ``--timeout`` (each DIMSE answer),
    ``--retries`` and ``--backoff`` -> the PacsSettings fields they set."""
    return {
        "connection_timeout": connect_timeout,
        "acse_timeout": connect_timeout,
        "dimse_timeout": timeout,
        "retries": retries,
        "backoff": backoff,
    }
