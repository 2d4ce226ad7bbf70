"""The README stays true: its Python examples run, its quick start names real targets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import redis
from helpers import StartWorkerMain

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
README_URL = "redis://localhost:6379/0"


def run_example(code: str, url: str) -> None:
    assert README_URL in code, "README examples connect to the URL the test replaces"
    exec(compile(code.replace(README_URL, url), "README.md", "exec"), {})


def test_the_readme_has_the_examples_this_test_runs() -> None:
    assert len(EXAMPLES) == 2


def test_the_library_example_runs(redis_url: str) -> None:
    run_example(EXAMPLES[0], redis_url)


def test_the_jobs_example_runs_against_real_workers(
    redis_url: str, r: redis.Redis, start_worker_main: StartWorkerMain
) -> None:
    start_worker_main(pool="doublers", workers=1)
    run_example(EXAMPLES[1], redis_url)


def test_the_quick_start_commands_are_make_targets() -> None:
    quick = README[README.index("## Quick start") : README.index("## The library")]
    targets = re.findall(r"^make (\w+)", quick, re.MULTILINE)
    assert targets == ["demo", "test"]
    for target in targets:
        dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr
