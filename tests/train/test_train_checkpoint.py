"""Atomic checkpoint writes: a complete file or the previous one, never a partial file or a leftover."""

from __future__ import annotations

import pytest
import torch

from modan_pacs.train.checkpoint import save_atomic


def test_save_atomic_writes_a_loadable_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_atomic({"epoch": 3, "w": torch.arange(4.0)}, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["epoch"] == 3 and torch.equal(loaded["w"], torch.arange(4.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"epoch": 1}, path)
    with pytest.raises(Exception, match="pickle"):
        save_atomic({"epoch": 2, "bad": lambda: None}, path)  # a local function cannot be pickled
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
