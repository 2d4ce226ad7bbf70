"""The page in a real browser: headless Debian Chromium, driven by chromedriver.

A live pool (worker_main), ``redispool web`` as its own process, the page
open: a checkout shows busy within 2 s, a killed worker's burial appears in
the event list, a hostile worker id is shown as text and runs nothing. The
screenshot goes to the test's tmp dir, and to ``$REDISPOOL_SCREENSHOT`` when
set (``REDISPOOL_SCREENSHOT=docs/web.png`` makes the README's picture).
One browser per module. Under CI=true a missing chromium fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import StartWorkerMain, pid_alive, wait_for
from webserver import WebProcess

from redispool import Pool, events
from redispool.metrics import Metrics

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1700",
)  # fmt: skip
HOSTILE = "<img/src=x/onerror=alert(1)>"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        reason = f"no {' and '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires the browser: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="redispool-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()  # chromedriver stops the browser it started, then itself
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def web_process(redis_url: str, tmp_path: Path) -> Iterator[str]:
    """``redispool web`` on a free loopback port; its URL. Stopped by pid."""
    web = WebProcess(redis_url, tmp_path / "web.log")
    try:
        yield web.url
    finally:
        web.stop()


ROWS = """
return Array.from(document.querySelectorAll(arguments[0])).map(
  (row) => [row.dataset.worker || null, row.className,
            Array.from(row.querySelectorAll("td")).map((td) => td.textContent)]);
"""


def _rows(driver: object, selector: str) -> list[tuple[str | None, str, list[str]]]:
    """Each row's data-worker, class and cell texts, read in one go (the page redraws)."""
    return [tuple(r) for r in driver.execute_script(ROWS, selector)]  # type: ignore[attr-defined]


def _row_state(driver: object, worker: str) -> str | None:
    for wid, _cls, cells in _rows(driver, "#workers tbody tr"):
        if wid == worker:
            return cells[1]
    return None


def _buried_rows(driver: object, worker: str) -> bool:
    return any(cells[2] == worker for _w, _c, cells in _rows(driver, "#events tbody tr.buried"))


def test_the_page_follows_a_live_pool_and_shows_hostile_ids_as_text(
    browser: object, start_worker_main: StartWorkerMain, web_process: str, redis_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    driver = browser
    main = start_worker_main(pool="doublers", workers=3)
    pool = Pool("doublers", redis_url)
    metrics = Metrics(pool.client, ["doublers"])
    try:
        pool.add_worker(HOSTILE, host="<b>bold</b>", pid=1)
        ids = [w.id for w in pool.workers() if w.id != HOSTILE]
        driver.get(web_process + "#doublers")  # type: ignore[attr-defined]
        wait_for(lambda: _row_state(driver, ids[0]) == "idle", timeout=10, message="the page")

        lease = metrics.checkout(pool, timeout=5)
        asked = time.monotonic()
        wait_for(lambda: (_row_state(driver, lease.worker_id) or "").startswith("busy"),
                 timeout=2.0, interval=0.05, message="the page to show the checkout busy")
        print(f"checkout shown busy after {time.monotonic() - asked:.2f} s")

        victim = next(w for w in pool.workers() if w.state == "idle" and w.id != HOSTILE)
        assert victim.pid is not None and pid_alive(victim.pid)
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: _buried_rows(driver, victim.id), timeout=15, interval=0.1,
                 message="the burial in the event list")
        print(f"burial shown {time.monotonic() - killed:.2f} s after the kill")
        assert any(e.kind == "buried" and e.worker == victim.id
                   for e in events.read(pool.client, "doublers"))  # fmt: skip

        (hostile,) = [c for w, _, c in _rows(driver, "#workers tbody tr") if w == HOSTILE]
        assert hostile[0] == HOSTILE and hostile[2] == "<b>bold</b>"  # text cells ...
        assert driver.find_elements(By.TAG_NAME, "img") == []  # type: ignore[attr-defined]
        assert driver.find_elements(By.TAG_NAME, "b") == []  # type: ignore[attr-defined]
        with pytest.raises(NoAlertPresentException):  # ... and runs nothing
            driver.switch_to.alert.text  # type: ignore[attr-defined]  # noqa: B018

        points = "return document.querySelector('#chart-numbers polyline').points.length"
        assert driver.execute_script(points) == 60  # type: ignore[attr-defined]
        driver.find_element(By.CSS_SELECTOR, "input[name=span][value='1440']").click()  # type: ignore[attr-defined]
        wait_for(lambda: driver.execute_script(points) == 1440, timeout=5,  # type: ignore[attr-defined]
                 message="the chart of the last day")
        driver.find_element(By.CSS_SELECTOR, "input[name=span][value='60']").click()  # type: ignore[attr-defined]
        wait_for(lambda: driver.execute_script(points) == 60, timeout=5,  # type: ignore[attr-defined]
                 message="the chart of the last hour")
        peak = "return document.querySelector('#chart-numbers text.peak').textContent"
        wait_for(lambda: driver.execute_script(peak) != "max 0", timeout=15,  # type: ignore[attr-defined]
                 message="the history chart to show a sample")  # the Reaper samples every 5 s
        shot = tmp_path / "web.png"
        assert driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("REDISPOOL_SCREENSHOT"):
            shutil.copy(shot, os.environ["REDISPOOL_SCREENSHOT"])
        pool.checkin(lease)
    finally:
        metrics.stop()
        pool.close()
        del main


def test_a_pool_with_junk_in_its_keys_shows_its_error_and_the_others_still_show(
    browser: object, web_process: str, redis_url: str
) -> None:
    driver = browser
    good, broken = Pool("okpool", redis_url), Pool("junkpool", redis_url)
    try:
        good.add_worker("w1")
        broken.add_worker("w1")
        broken.client.delete(broken.keys.deadlines)
        broken.client.set(broken.keys.deadlines, "<img/src=x/onerror=alert(3)>")
        driver.get(web_process + "#okpool")  # type: ignore[attr-defined]

        def pools() -> dict[str, tuple[str, list[str]]]:
            return {c[0]: (cls, c) for _w, cls, c in _rows(driver, "#pools tbody tr") if c}

        wait_for(lambda: {"okpool", "junkpool"} <= set(pools()), timeout=10, message="both pools")
        shown = pools()
        assert shown["okpool"][1][1] == "1"  # its size, in its own cells
        assert "CORRUPT" in shown["junkpool"][1][1]  # the error, as the row's text
        assert len(shown["junkpool"][1]) == 2
    finally:
        good.close()
        broken.close()
