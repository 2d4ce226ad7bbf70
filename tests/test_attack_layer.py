"""Attacks on the layer that knows the scripts: KEYS sent in another order than
the Lua header says, a result code written by hand in a script, an error that
names a different operation on the sync side than the op itself does.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import fakeredis
import pytest
import redis
from helpers import key_part
from test_scripts import exercise_every_script, header_of

from redispool import Pool, PoolCorrupted, liveness, scripts, wire
from redispool.liveness import Incarnation

ENTRY = re.compile(r"^\s*KEYS\[(\d+)(?:\.\.(\w+))?\]\s+(\S+)", re.MULTILINE)


def _include_header(name: str) -> str:
    text = resources.files("redispool").joinpath(f"scripts/includes/{name}.lua").read_text()
    match = re.search(r"--\[\[(.*?)\]\]", text, re.DOTALL)
    assert match, name
    return match.group(1)


def _common_names() -> dict[int, str]:
    """KEYS position -> name of the keys every pool script shares (pool.lua, workers.lua)."""
    names = {}
    for include in ("pool", "workers"):
        for first, _last, name in ENTRY.findall(_include_header(include)):
            names[int(first)] = name
    return names


def expected_keys(script: str, sent: int) -> list[str]:
    """The name of each of ``sent`` KEYS, in the order ``script``'s header lists them."""
    common, names = _common_names(), []
    for first, last, name in ENTRY.findall(header_of(script)):
        if last and last.isdigit():  # KEYS[1..9]: the common keys, named in the includes
            names += [common[i] for i in range(int(first), int(last) + 1)]
        elif last:  # KEYS[2..n]: one name, repeated to the end
            names += [name] * (sent - len(names))
        else:
            names.append(name)
    return names


@pytest.fixture
def sent_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, set[tuple[str, ...]]]]:
    """Every FCALL's KEYS as it goes over the wire, by script name."""
    calls: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    names = {scripts.library().function(name): name for name in scripts.SCRIPT_NAMES}
    real = wire.Wire.call_packed  # Wire.call sends through it too

    def record(self: wire.Wire, packed: bytes, command: Callable[[], Any]) -> Any:
        sent = command()
        if sent[0] == "FCALL":
            numkeys = int(sent[2])
            calls[names[sent[1]]].add(tuple(sent[3 : 3 + numkeys]))
        return real(self, packed, command)

    monkeypatch.setattr(wire.Wire, "call_packed", record)
    yield calls


def test_every_script_gets_its_keys_in_the_order_its_header_lists_them(
    sent_keys: dict[str, set[tuple[str, ...]]],
) -> None:
    pool = Pool("unit", redis=fakeredis.FakeRedis(), lease_ttl=5)
    try:
        exercise_every_script(pool)
    finally:
        pool.close()
    assert set(sent_keys) == set(scripts.SCRIPT_NAMES)
    for script, calls in sent_keys.items():
        for keys in calls:
            got = [key_part(k, "unit") for k in keys]
            assert got == expected_keys(script, len(keys))[: len(got)], script


def test_no_script_writes_a_result_code_by_number() -> None:
    """The codes come from errors.Code (scripts.code_constants), never copied."""
    literal = re.compile(r"return\s*\{\s*-?\d+\s*[,}]")
    for name in scripts.SCRIPT_NAMES:
        text = resources.files("redispool").joinpath(f"scripts/{name}.lua").read_text()
        body = re.sub(r"--\[\[.*?\]\]", "", text, flags=re.DOTALL)
        assert not literal.search(body), f"{name}.lua returns a code by its number"


def test_a_heartbeat_that_meets_junk_in_redis_names_the_heartbeat(r: redis.Redis) -> None:
    """The error names the operation the op names (as the asyncio side and a
    reply of the wrong shape do), not the script that serves it."""
    pool = Pool("junkbeat", redis=r)
    try:
        me = Incarnation("wp", "inc-a", "host", 123, 1000, False)
        liveness.register(pool, me)
        r.delete(pool.keys.heartbeats)
        r.set(pool.keys.heartbeats, "junk")  # a string where the heartbeat writes a zset
        with pytest.raises(PoolCorrupted) as caught:
            liveness.beat(pool, me)
        assert caught.value.operation == "heartbeat"
        assert "heartbeat" in str(caught.value)
    finally:
        pool.close()


JUNK_REPLIES: tuple[Any, ...] = (
    None, b"junk", 7, [], [99], [-1], [b"x"], [0], [0, b"x", b"y"], [1, None], [2, b"\xff"],
    [0, b"1|2|3|ab|w1", b"extra"], [0, b"no bars here"], [b"\xc2\xb2", 1, 2, 3],
)


def test_every_op_reads_a_reply_of_any_wrong_shape_or_unknown_code_as_a_pool_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever Redis answers (junk, a code no table has), the caller sees a
    PoolError subclass naming the pool, never a bare KeyError or AttributeError."""
    from redispool import PoolError
    from redispool.sender import Sender

    ops: dict[str, Any] = {}
    real = Sender.send

    def capture(self: Sender, op: Any) -> Any:
        ops.setdefault(op.script, op)
        return real(self, op)

    monkeypatch.setattr(Sender, "send", capture)
    pool = Pool("unit", redis=fakeredis.FakeRedis(), lease_ttl=5)
    try:
        exercise_every_script(pool)
    finally:
        pool.close()
    assert len(ops) >= 10, sorted(ops)
    for script, op in ops.items():
        for junk in JUNK_REPLIES:
            try:
                op.read(junk)
            except PoolError as exc:
                assert exc.pool == "unit", (script, junk, exc)
            except Exception as exc:  # the attack: anything else escaping
                pytest.fail(f"{script} read {junk!r} and raised {type(exc).__name__}: {exc}")
