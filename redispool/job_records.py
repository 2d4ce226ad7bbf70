"""RQ's records of a pool's jobs, written by redispool's own scripts: their format, no I/O.

A job sent with ``lease.run`` is an RQ job: its hash is the one RQ 3.0's
``Job.save`` writes (JSON data, left uncompressed, which ``Job.restore``
accepts), its result an entry of RQ's results stream in the format of
``Result.serialize`` (``return_value`` base64 of JSON, ``exc_string`` base64 of
zlib). So ``Job.fetch``, ``job.latest_result()``, the registries and ``rq info``
read them; redispool writes them in one script each instead of through RQ's
Python (see :mod:`redispool.protocol.jobs`). A refused or stopped job's
result entry also carries the worker's verdict (``redispool_verdict``, an
:mod:`redispool.errors` code), which RQ ignores.
"""

from __future__ import annotations

import json
import zlib
from base64 import b64decode, b64encode
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import uuid4

from . import errors
from .protocol.jobs import VERDICT_FIELD, End

__all__ = [
    "VERDICT_FIELD", "Call", "Result", "call_of", "end_of", "job_fields", "read_result",
    "timestamp",
]  # fmt: skip

#: RQ's default result and failure TTLs (rq.defaults), for records that name none.
RQ_RESULT_TTL, RQ_FAILURE_TTL = 500, 31536000
#: Most bytes a job's compressed data (RQ's own enqueue compresses it) may
#: inflate to: a few kilobytes written to Redis must not make a worker
#: allocate gigabytes. Larger data is refused as not RQ's JSON.
MAX_DATA_BYTES = 64 << 20
#: Most bytes a failure's compressed text may inflate to on the client.
MAX_EXC_BYTES = 16 << 20
SUCCESSFUL, FAILED = 1, 2  # rq.results.Result.Type


def timestamp(moment: float) -> str:
    """RQ's text of a moment (``rq.utils.utcformat``)."""
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def job_fields(
    func_name: str, args: Sequence[Any], queue: str, meta: dict[str, Any], *, timeout: int,
    result_ttl: int, failure_ttl: int, ttl: int, now: float,
) -> tuple[str, list[str]]:  # fmt: skip
    """A new job id and RQ's hash of a queued job of ``func_name(*args)`` (name, value, ...)."""
    job_id = str(uuid4())
    at = timestamp(now)
    description = f"{func_name}({', '.join(repr(a) for a in args)})"
    fields = [
        "created_at", at, "enqueued_at", at, "status", "queued", "origin", queue,
        "data", json.dumps([func_name, None, list(args), {}]), "description", description,
        "timeout", str(timeout), "result_ttl", str(result_ttl), "failure_ttl", str(failure_ttl),
        "ttl", str(ttl), "meta", json.dumps(meta),
    ]  # fmt: skip
    return job_id, fields


@dataclass(frozen=True)
class Call:
    """What a job asks to run (RQ's data: function, instance, args, kwargs)."""

    func_name: str
    instance: Any
    args: list[Any]
    kwargs: dict[str, Any]


def call_of(data: bytes) -> Call:
    """The call in RQ's ``data`` field (JSON, compressed by RQ's own enqueue or not).
    Raises ValueError for anything else (a pickle, junk)."""
    inflated = _inflated(data, MAX_DATA_BYTES)
    if inflated is not None:  # redispool's own records are not compressed
        data = inflated
    try:
        func_name, instance, args, kwargs = json.loads(data)
    except (TypeError, ValueError, RecursionError) as exc:  # (nested past Python's limit)
        raise ValueError(f"job data is not RQ's JSON: {exc}") from None
    if not isinstance(func_name, str) or not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ValueError("job data is not RQ's JSON (function, instance, args, kwargs)")
    return Call(func_name, instance, args, kwargs)


def _inflated(data: bytes, limit: int) -> bytes | None:
    """``data`` decompressed, if it is one whole zlib stream; None if it is not
    zlib (or is cut short). Raises ValueError, having inflated no more than
    ``limit`` bytes and one more, if it inflates past ``limit``."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        return None
    if len(out) > limit:
        raise ValueError(f"compressed data inflates past {limit} bytes: refused")
    return out if inflater.eof else None


def _exc_field(exc_string: str) -> str:
    return b64encode(zlib.compress(exc_string.encode())).decode()


def end_of(
    kind: str, *, value: Any = None, exc_string: str = "", lost_message: str = "",
    verdict: int | None = None, execution: str, now: float, result_ttl: int,
    failure_ttl: int, worker_name: str,
) -> End:  # fmt: skip
    """The End of a job that ``returned`` ``value`` or ``failed`` with
    ``exc_string``; ``lost_message`` is its failure should its lease turn out
    to have ended before the return."""
    return End(
        kind,
        b64encode(json.dumps(value).encode()).decode() if kind == "returned" else "",
        _exc_field(exc_string) if kind != "returned" else "",
        _exc_field(lost_message) if kind == "returned" else "",
        verdict, execution, timestamp(now), now, result_ttl, failure_ttl, worker_name,
    )  # fmt: skip


@dataclass(frozen=True)
class Result:
    """One entry of RQ's results stream: success with ``value``, or failure with
    ``exc_string`` and the worker's ``verdict`` (an errors code, None if none)."""

    ok: bool
    value: Any = None
    exc_string: str = ""
    verdict: int | None = None


def read_result(fields: dict[bytes, bytes]) -> Result:
    """The result in a results entry (as ``rq.results.Result.restore`` reads it)."""
    kind = int(fields[b"type"])
    if kind == SUCCESSFUL:
        raw = fields.get(b"return_value")
        try:
            return Result(True, None if raw is None else json.loads(b64decode(raw)))
        except RecursionError:  # nested past Python's limit: not what a worker writes
            raise ValueError("return_value is nested too deep") from None
    raw = fields.get(b"exc_string")
    inflated = _inflated(b64decode(raw), MAX_EXC_BYTES) if raw else b""
    if inflated is None:
        raise ValueError("exc_string is not base64 of zlib")
    exc_string = inflated.decode()
    code = fields.get(VERDICT_FIELD.encode())
    verdict = int(code) if code is not None and code.isdigit() else None
    return Result(False, exc_string=exc_string,
                  verdict=verdict if verdict in errors.CODES else None)  # fmt: skip
