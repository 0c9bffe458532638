"""runners/vlm/reuse.py: the follow-up caches' LRU stays within its bytes, counts hits, misses and evictions in
/metrics, and its content keys never read two different part lists as one."""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY

from runners.vlm.reuse import ByteLRU, content_key


def counted(cache: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("mms_vqa_cache_total", {"cache": cache, "outcome": outcome}) or 0.0


def test_least_recently_used_goes_first_and_the_rest_fits() -> None:
    lru = ByteLRU("vision", limit=10)
    lru.put("a", "A", 4)
    lru.put("b", "B", 4)
    assert lru.get("a") == "A"  # a is now the most recent
    lru.put("c", "C", 4)  # 12 > 10: b, the least recent, goes
    assert (lru.get("b"), lru.get("a"), lru.get("c")) == (None, "A", "C")
    info = lru.info()
    assert info == {"entries": 2, "bytes": 8, "limit_bytes": 10, "hits": 3, "misses": 1, "evictions": 1}


def test_a_value_larger_than_the_budget_is_not_kept_and_evicts_nothing() -> None:
    lru = ByteLRU("prefix", limit=10)
    lru.put("a", "A", 6)
    lru.put("big", "B", 11)
    assert (lru.get("big"), lru.get("a"), lru.info()["evictions"]) == (None, "A", 0)


def test_a_zero_budget_keeps_nothing() -> None:
    lru = ByteLRU("vision", limit=0)
    lru.put("a", "A", 0 + 1)
    assert not lru.enabled and lru.get("a") is None and lru.info()["bytes"] == 0


def test_replacing_a_key_counts_its_size_once() -> None:
    lru = ByteLRU("vision", limit=10)
    lru.put("a", "A", 6)
    lru.put("a", "A2", 7)
    assert (lru.get("a"), lru.info()["bytes"], lru.info()["entries"]) == ("A2", 7, 1)


def test_hits_misses_and_evictions_reach_metrics() -> None:
    before = {outcome: counted("metrics-test", outcome) for outcome in ("hit", "miss", "eviction")}
    lru = ByteLRU("metrics-test", limit=5)
    lru.put("a", 1, 3)
    lru.get("a")
    lru.get("b")
    lru.put("c", 2, 3)  # a evicted
    after = {outcome: counted("metrics-test", outcome) for outcome in ("hit", "miss", "eviction")}
    assert {k: after[k] - before[k] for k in after} == {"hit": 1, "miss": 1, "eviction": 1}


def test_concurrent_use_stays_within_the_budget() -> None:
    lru = ByteLRU("vision", limit=100)

    def work(offset: int) -> None:
        for i in range(300):
            lru.put(f"{offset}-{i}", i, 7)
            lru.get(f"{offset}-{i - 3}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    info = lru.info()
    assert info["bytes"] <= 100 and info["bytes"] == 7 * info["entries"] and info["evictions"] == 1200 - 14


def test_content_keys_separate_their_parts() -> None:
    assert content_key("ab", "c") != content_key("a", "bc")
    assert content_key(b"\x00\x01", [1, 2]) != content_key(b"\x00\x01", [12])
    assert content_key("m", [2, 4, 4], b"pixels") == content_key("m", [2, 4, 4], b"pixels")
    assert content_key("m", [1, 4, 8], b"pixels") != content_key("m", [1, 8, 4], b"pixels")
