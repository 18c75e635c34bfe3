"""The benchmark's pure helpers (no timing, no model: benchmarks never run in `make test`)."""

import pytest

from bench.speed import config, fmt_ratio, fmt_spread, ratios, repeat_to, spread, with_random_system_prompts
from pipeline.lib.packing import MIN_PREFIX


def test_spread_and_ratios():
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0, "n": 3}
    assert spread([])["median"] is None
    assert ratios([4.0, 9.0], [2.0, 3.0]) == [2.0, 3.0]
    with pytest.raises(ValueError):
        ratios([1.0], [1.0, 2.0])
    assert fmt_ratio(spread([2.0, 1.0, 3.0])) == "2.00x [1.00-3.00]"
    assert fmt_spread(spread([1000.0, 2000.0, 3000.0]), digits=0) == "2,000 [1,000-3,000]"
    assert fmt_ratio({}) == "-"


def test_repeat_to():
    assert repeat_to([1, 2, 3], 7) == [1, 2, 3, 1, 2, 3, 1]
    assert repeat_to([1, 2, 3], 2) == [1, 2]
    with pytest.raises(ValueError):
        repeat_to([], 3)


def test_random_system_prompts_break_the_shared_prefix():
    recs = [{"id": str(i), "messages": [{"role": "system", "content": "You are the support assistant."},
                                        {"role": "user", "content": f"q{i}"}]} for i in range(20)]
    out = with_random_system_prompts(recs)
    systems = [r["messages"][0]["content"] for r in out]
    assert len(set(systems)) == len(systems)
    assert all(s.endswith("You are the support assistant.") for s in systems)
    # Distinct within the first few characters: the token prefix they share stays under MIN_PREFIX.
    assert len({s[:len("Ticket ") + 3] for s in systems}) > 1 and MIN_PREFIX > 4
    assert recs[0]["messages"][0]["content"] == "You are the support assistant."  # input untouched
    assert with_random_system_prompts(recs) == out  # deterministic


def test_config_sizes():
    full, quick = config(False, None), config(True, None)
    assert full["validate_lines"] == 50_000 and full["count_examples"] == 50_000
    assert quick["count_examples"] == 2_000 and quick["validate_lines"] < full["validate_lines"]
    assert config(True, 5)["repeats"] == 5
