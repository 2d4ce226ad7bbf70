"""Attacks on the hot scripts' shapes (issue 13, target 1), on real servers.

The hot scripts are sent the pool's prefix alone and name its other keys from
it, kept per prefix in the library. A call whose KEYS[1] is not a prefix must
never fall back on the key names of the pool the library served last: it
would run on another tenant's keys without naming them (on a server without
ACLs, or on keys a user's patterns happen to cover).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redispool import Pool, scripts

MakePool = Callable[..., Pool]
NONCE = "ab" * 16


@pytest.mark.parametrize("operation, args", [
    ("checkout", ("60000", "h:1", "", "1000", NONCE)),
    ("checkin", ("wb", "1", NONCE)),
    ("cancel_wait", ("t1",)),
])  # fmt: skip
def test_a_call_whose_first_key_is_not_a_prefix_never_runs_on_the_last_pool_served(
    operation: str, args: tuple[str, ...], make_pool: MakePool, r: redis.Redis
) -> None:
    other = make_pool("tenant-b", workers=0)
    other.add_worker("wb")
    mine = make_pool("tenant-a", workers=1)
    other.checkout(block=False, auto_renew=False).checkin()  # the library served tenant-b last
    before = {key: r.dump(key) for key in sorted(r.scan_iter(match=other.keys.prefix + "*"))}

    with pytest.raises(redis.ResponseError, match="not a pool prefix"):
        r.fcall(scripts.library().function(operation), 1, mine.keys.prefix + "junk", *args)
    after = {key: r.dump(key) for key in sorted(r.scan_iter(match=other.keys.prefix + "*"))}
    assert after == before, "the call ran on tenant-b's keys"
    assert r.lrange(other.keys.idle, 0, -1) == [b"wb"]
