"""The fenced store: a write from an ended lease is refused once a newer lease has written."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources

import pytest
import redis

from redispool import Fence, LeaseLost, Pool, StaleToken, errors, scripts


def test_a_paused_holders_late_write_is_refused_and_the_new_holders_lands(
    make_pool: Callable[..., Pool], r: redis.Redis
) -> None:
    pool = make_pool("fenced", workers=1, lease_ttl=0.2)
    store = Fence(r, "orders")
    paused = pool.checkout(block=False, auto_renew=False)
    store.write(paused.token, "order:1", "first")  # while its lease holds
    with pool.lease(timeout=5) as fresh:  # the paused holder's lease ends; this one begins
        assert fresh.token > paused.token
        store.write(fresh.token, "order:1", "fresh")
        with pytest.raises(StaleToken) as refused:
            store.write(paused.token, "order:1", "late")  # the paused holder is back
        assert isinstance(refused.value, LeaseLost)
        assert f"token {fresh.token}" in str(refused.value)
        store.write(fresh.token, "order:1", "again")  # the same lease may write again
    assert store.read("order:1") == b"again"
    assert store.highest() == fresh.token


def test_writes_from_ever_newer_tokens_land_and_an_older_one_changes_nothing(
    r: redis.Redis,
) -> None:
    store = Fence(r, "ledger")
    big = 2**60  # beyond a Lua double's exact integers: compared as decimals
    store.write(big, "a", "1")
    store.write(big + 1, "b", "2")
    with pytest.raises(StaleToken):
        store.write(big, "a", "stale")
    assert (store.read("a"), store.read("b"), store.highest()) == (b"1", b"2", big + 1)


def test_bad_input_is_refused_before_any_redis_call(r: redis.Redis) -> None:
    with pytest.raises(ValueError, match="fence name"):
        Fence(r, "no spaces")
    store = Fence(r, "f")
    for token in (0, -1, True, "5", 1.5):
        with pytest.raises(ValueError, match="token"):
            store.write(token, "k", "v")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key"):
        store.write(1, "", "v")
    with pytest.raises(ValueError, match="value"):
        store.write(1, "k", 5)  # type: ignore[arg-type]
    assert r.keys("redispool:fence:*") == []


def test_junk_in_the_highest_token_is_reported_and_nothing_is_written(r: redis.Redis) -> None:
    store = Fence(r, "junk")
    r.set(store.keys.highest, "not-a-token")
    with pytest.raises(redis.ResponseError, match="CORRUPT"):
        store.write(5, "k", "v")
    assert store.read("k") is None


def test_the_fence_scripts_codes_and_header_match_the_python() -> None:
    text = resources.files("redispool").joinpath("scripts/fence_write.lua").read_text()
    header = re.search(r"--\[\[(.*?)\]\]", text, re.DOTALL)
    assert header and header.group(1).strip().startswith("fence_write:")
    assert "KEYS[2]" in header.group(1) and "ARGV[2]" in header.group(1)
    assert "KEYS[3]" not in header.group(1) and "ARGV[3]" not in header.group(1)
    assert not re.search(r"^local [A-Z_, ]+ = [\d, ]+$", text, re.M), "codes copied by hand"
    codes = re.search(r"local ([A-Z_, ]+) = ([\d, ]+)\n", scripts.source_of("fence_write"))
    assert codes
    names = [n.strip() for n in codes.group(1).split(",")]
    values = [int(v) for v in codes.group(2).split(",")]
    for name, value in zip(names, values, strict=True):
        assert getattr(errors, name) == value and value in errors.CODES, name
