"""modan_pacs.slice_policy: one grammar for the cache's --slices and the benchmark's slice_policy."""

import math

import pytest

from modan_pacs.bench.config import load_benchmark_config
from modan_pacs.errors import ConfigError, InputError
from modan_pacs.slice_policy import parse_slice_policy, select_slices


def _slow(n_frames: int, policy: str) -> list[int]:
    """The two former implementations, written out: even:N from pixels/decode, center:K from bench/datasets."""
    kind, _, count = policy.partition(":")
    if kind == "middle":
        return [n_frames // 2]
    if kind == "all":
        return list(range(n_frames))
    k = int(count)
    if kind == "center":
        k = min(k, n_frames)
        return list(range((n_frames - k) // 2, (n_frames - k) // 2 + k))
    return list(range(n_frames)) if k >= n_frames else [int(math.floor((i + 0.5) * n_frames / k)) for i in range(k)]


@pytest.mark.parametrize(
    "policy", ["middle", "all", "even:1", "even:3", "even:7", "center:1", "center:2", "center:5", "center:40"]
)
def test_selection_matches_both_former_implementations(policy):
    for n in range(1, 25):
        assert select_slices(n, policy) == _slow(n, policy), (n, policy)
    assert select_slices(0, policy) == []


def test_hand_cases():
    assert select_slices(10, "even:3") == [1, 5, 8]
    assert select_slices(10, "center:3") == [3, 4, 5]
    assert select_slices(4, "center:2") == [1, 2]
    assert parse_slice_policy(" Center:4 ") == ("center", 4)


@pytest.mark.parametrize("bad", ["", "middl", "even:0", "center:-1", "center:x", "even", "center:", "thin:3"])
def test_bad_policies_name_the_grammar(bad):
    with pytest.raises(InputError, match=r"slice policy .* is not one of: middle, all, even:N .*center:K"):
        parse_slice_policy(bad)


def test_benchmark_config_accepts_both_spellings_and_names_the_field():
    assert load_benchmark_config(slice_policy="center:3").slice_policy == "center:3"
    assert load_benchmark_config(slice_policy="even:3").slice_policy == "even:3"
    with pytest.raises(ConfigError, match="slice_policy"):
        load_benchmark_config(slice_policy="centre:3")
