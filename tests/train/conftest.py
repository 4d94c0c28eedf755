"""Fixtures of the distributed-training tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from cache_factory import generated_cache  # noqa: E402


@pytest.fixture()
def distributed_cache(tmp_path) -> Path:
    """A 16-image, 16 px generated cache for 2-process runs; skips when torch has no torch.distributed."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    return generated_cache(tmp_path / "cache", n=16, size=16)
