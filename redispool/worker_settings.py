"""What one worker process needs to know, as it travels from its supervisor (JSON in
the environment variable :data:`SETTINGS_ENV`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .jobs import DEFAULT_FUNCTIONS

__all__ = ["SETTINGS_ENV", "WorkerSettings"]

#: Environment variable that carries a worker process's settings (JSON).
SETTINGS_ENV = "REDISPOOL_WORKER_SETTINGS"


@dataclass(frozen=True)
class WorkerSettings:
    """What one worker process needs to know."""

    url: str
    pool: str
    worker_id: str
    incarnation: str
    heartbeat_ttl: float = 5.0
    functions: tuple[str, ...] = tuple(sorted(DEFAULT_FUNCTIONS))
    replaces: str = ""
    #: Seconds an overflow worker stays idle before it leaves; None: not overflow.
    overflow_idle: float | None = None
    lease_ttl: float | None = None
    min_replicas: int = 0
    replica_timeout: float = 1.0
    #: Seconds a job whose lease ended may take to return before it is killed.
    stop_grace: float = 1.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> WorkerSettings:
        values = json.loads(raw)
        values["functions"] = tuple(values.get("functions", ()))
        return cls(**values)
