"""docker-compose.yml and the Dockerfile, checked offline (no Docker engine runs here).

The file is validated against the compose specification's schema, its references are
checked (the schema does not), and every command a service runs is parsed by the real
`redispool` click commands or worker_main's own parser.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from ruamel.yaml import YAML

from redispool.cli import cli

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def services() -> dict[str, dict[str, Any]]:
    loaded: dict[str, Any] = YAML(typ="safe").load(COMPOSE.read_text())
    found: dict[str, dict[str, Any]] = loaded["services"]
    return found


def argv(service: dict[str, Any]) -> list[str]:
    """The program and arguments a service runs (entrypoint + command)."""
    return [*service.get("entrypoint", []), *service.get("command", [])]


def test_compose_file_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dependency_and_image_is_defined_in_the_file() -> None:
    found = services()
    built = {s["image"] for s in found.values() if "build" in s and "image" in s}
    for name, service in found.items():
        for needed in service.get("depends_on", {}):
            assert needed in found, f"{name} depends on undefined service {needed}"
        image = service.get("image", "")
        if image.startswith("redispool"):
            assert image in built, f"{name} uses image {image} that no service builds"


def test_redis_turns_on_expired_events_and_reports_health() -> None:
    redis = services()["redis"]
    command = argv(redis)
    assert command[command.index("--notify-keyspace-events") + 1] == "Ex"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name, service in services().items():
        if name != "redis":
            assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_workers_can_scale() -> None:
    worker = services()["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["environment"]["REDISPOOL_URL"] == "redis://redis:6379/0"


@pytest.mark.parametrize(
    "name", [n for n, s in services().items() if argv(s)[:1] == ["redispool"]]
)
def test_redispool_commands_parse_with_the_real_cli(name: str) -> None:
    args = argv(services()[name])[1:]
    parent = click.Context(cli, info_name="redispool")
    command = cli.get_command(parent, args[0])
    assert command is not None, f"{name}: no command {args[0]!r}"
    with command.make_context(args[0], args[1:], parent=parent) as ctx:
        assert ctx.params


def load_worker_main() -> Any:
    path = ROOT / "worker_main.py"
    if not path.exists():
        pytest.skip("worker_main.py is not in this checkout yet")
    spec = importlib.util.spec_from_file_location("worker_main_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_worker_command_uses_real_worker_main_options(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = services()["worker"]
    args = argv(worker)
    assert args[:2] == ["python", "worker_main.py"]
    for name, value in worker["environment"].items():  # as compose sets them
        monkeypatch.setenv(name, value)
    module = load_worker_main()
    commands = [v for v in vars(module).values() if isinstance(v, click.Command)]
    assert commands, "worker_main.py has no click command to parse its options with"
    with commands[0].make_context("worker_main.py", args[2:]) as ctx:
        assert ctx.params


def test_dockerfile_copies_only_what_exists_and_installs_the_package() -> None:
    lines = [line.split() for line in DOCKERFILE.read_text().splitlines() if line.strip()]
    copies = [words[1:-1] for words in lines if words[0] == "COPY"]
    assert copies, "the Dockerfile copies nothing"
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert any(words[:3] == ["RUN", "pip", "install"] for words in lines)
