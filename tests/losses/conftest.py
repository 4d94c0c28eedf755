"""Run the loss tests through both code paths of the shared core: one (M, M) product, and the
symmetric three-block product used from ``_SPLIT_MIN_VIEWS`` views on."""

from __future__ import annotations

import pytest

from modan_pacs.losses import contrastive


@pytest.fixture(params=["one-product", "three-blocks"])
def similarity_path(request, monkeypatch):
    monkeypatch.setattr(contrastive, "_SPLIT_MIN_VIEWS", 10**9 if request.param == "one-product" else 0)
    return request.param
