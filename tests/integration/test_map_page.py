"""The map page as a person sees it: `trackstore demo` (buses moving) and `trackstore serve` with
API keys, in Debian's chromium driven by Playwright, reaching nothing but 127.0.0.1.

Every request the browser makes to another host goes to a proxy of this test that answers
nothing, so the map's tiles never load: the markers and tracks must show on the plain background,
and the only host the page may reach for is the tile server's (which also tells that the page's
Content-Security-Policy lets the tiles through).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.outside_world import OutsideWorld, refusing_proxy

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
TRACKSTORE = [sys.executable, "-m", "trackstore.cli"]
REPO = Path(__file__).resolve().parents[2]
DEFAULT_ARTIFACT = REPO / "test-artifacts" / "map.png"
TILE_HOST = "tile.openstreetmap.org"  # the default MAP_TILE_URL's
DEMO_DEVICES = 12
SEEDED_DEVICES = 3
SEED_POINTS = 720  # 10 s apart: two hours of track, ending when serve starts
API_KEY = "map-page-test-key-0123456789"
PROBE = "/devices?limit=1"  # what the page asks first, to learn whether it needs a key
TIMEOUT_MS = 15_000
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
TRACK_TEXT = re.compile(r"(\d+) points? (?:\(the newest\) )?in the last (.+)$")


# -- the world outside: a proxy that refuses everything (tests/outside_world.py) ------------------


@pytest.fixture(scope="module")
def outside() -> Iterator[OutsideWorld]:
    with refusing_proxy() as world:
        yield world


@pytest.fixture(scope="module")
def browser(outside: OutsideWorld) -> Iterator[Browser]:
    chromium = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if chromium is None:
        pytest.fail(
            f"{CHROMIUM} is missing: the map page is tested in a real browser; install it with "
            "`apt-get install -y chromium`"
        )
    playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(
            executable_path=chromium,
            # Loopback is never proxied (Chromium bypasses it unless told `<-loopback>`), so the
            # page reaches trackstore directly and everything else meets the refusing proxy.
            args=[
                f"--proxy-server=http://127.0.0.1:{outside.port}",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        yield launched
        launched.close()
    finally:
        playwright.stop()


# -- trackstore ----------------------------------------------------------------------------------


def _start(args: list[str], env: dict[str, str], home: Path) -> subprocess.Popen[bytes]:
    log = home / "trackstore.log"
    with log.open("wb") as out:
        return subprocess.Popen(
            [*TRACKSTORE, *args], cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _base_url(process: subprocess.Popen[bytes], log: Path, pattern: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"trackstore exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"trackstore printed no address: {log.read_text()}"
        found = re.search(pattern, log.read_text())
        if found:
            return found.group(1)
        time.sleep(0.1)


def _wait_for_devices(base: str, count: int, headers: dict[str, str] | None = None) -> None:
    """Until the fleet snapshot holds `count` devices with a position."""
    deadline = time.monotonic() + 30
    while True:
        try:
            devices = located_devices(base, headers)
        except httpx.HTTPError:
            devices = []
        if len(devices) >= count:
            return
        assert time.monotonic() < deadline, f"{len(devices)} devices of {count} after 30 s"
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "FLEET_REFRESH_SECONDS": "1",
        **extra,
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`trackstore demo`: buses moving, on the memory backend; its base URL."""
    home = tmp_path_factory.mktemp("demo")
    process = _start(
        ["demo", "--devices", str(DEMO_DEVICES), "--rate", "24", "--port", "0"],
        _env(home),
        home,
    )
    try:
        base = _base_url(process, home / "trackstore.log", r"map: (http://127\.0\.0\.1:\d+)/map")
        _wait_for_devices(base, DEMO_DEVICES)
        yield base
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`trackstore serve` over seeded tracks, with an API key required; its base URL."""
    home = tmp_path_factory.mktemp("keyed")
    process = _start(
        [
            "serve",
            "--port",
            "0",
            "--seed-devices",
            str(SEEDED_DEVICES),
            "--seed-points",
            str(SEED_POINTS),
        ],
        _env(home, TRACKSTORE_BACKEND="memory", TRACKSTORE_API_KEYS=API_KEY),
        home,
    )
    try:
        base = _base_url(
            process, home / "trackstore.log", r'"listening on (http://127\.0\.0\.1:\d+)"'
        )
        _wait_for_devices(base, SEEDED_DEVICES, {"Authorization": f"Bearer {API_KEY}"})
        yield base
    finally:
        _stop(process)


def located_devices(base: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/devices", params={"limit": 1000}, headers=headers, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["nextToken"] is None
    return [device for device in body["devices"] if device["lastLocation"] is not None]


# -- the page ------------------------------------------------------------------------------------


@dataclass
class Console:
    """What the page said on its console, less what is expected: tiles failing to load (there is
    no network), and the 401s of the page's first request when it has no key (or a wrong one)."""

    errors: list[str] = field(default_factory=list)
    allow_probe_401: bool = False

    def note(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        if url.startswith(f"https://{TILE_HOST}/"):
            return
        if self.allow_probe_401 and url.endswith(PROBE) and "401" in message.text:
            return
        self.errors.append(f"{message.text} ({url})")

    def page_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")


def open_page(browser: Browser, console: Console) -> Page:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("console", console.note)
    page.on("pageerror", console.page_error)
    return page


def track_text(page: Page) -> tuple[int, str]:
    text = page.locator("#track-text").inner_text().strip()
    found = TRACK_TEXT.search(text)
    assert found, f"no track shown: {text!r}"
    return int(found.group(1)), found.group(2)


def wait_for_track(page: Page, window: str) -> tuple[int, int]:
    """Until the track for `window` is drawn: the points the page counts, and the vertices of the
    drawn line."""
    expect(page.locator("#track-text")).to_have_text(
        re.compile(rf"\d+ points? .*in the last {re.escape(window)}$"), timeout=TIMEOUT_MS
    )
    path = page.locator("path.track")
    expect(path).to_have_count(1)
    vertices = len(re.findall(r"[ML]", path.get_attribute("d") or ""))
    return track_text(page)[0], vertices


def marker_centres(page: Page) -> dict[str, list[float]]:
    centres: dict[str, list[float]] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('.bus-marker')].map((e) => {
            const r = e.getBoundingClientRect();
            return [e.dataset.deviceId, [r.x + r.width / 2, r.y + r.height / 2]];
        }))"""
    )
    return centres


# The markers that moved a pixel or more since `before`, and that a click at their centre reaches.
MOVED_AND_CLICKABLE = """(before) => {
    const moved = [];
    for (const e of document.querySelectorAll('.bus-marker')) {
        const was = before[e.dataset.deviceId];
        const r = e.getBoundingClientRect();
        const x = r.x + r.width / 2, y = r.y + r.height / 2;
        if (!was || Math.hypot(x - was[0], y - was[1]) < 1) continue;
        const hit = document.elementFromPoint(x, y);
        if (hit && e.contains(hit)) moved.push(e.dataset.deviceId);
    }
    return moved.length ? moved : null;
}"""


def save_screenshot(page: Page, tmp_path: Path) -> Path:
    picture = tmp_path / "map.png"
    page.screenshot(path=picture)
    target = Path(os.environ.get("TRACKSTORE_ARTIFACTS") or DEFAULT_ARTIFACT.parent)
    if target.suffix != ".png":  # a directory for the artifacts
        target = target / "map.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(picture, target)
    return picture


# -- the tests -----------------------------------------------------------------------------------


def test_the_map_follows_the_fleet_and_draws_tracks(
    browser: Browser, demo: str, outside: OutsideWorld, tmp_path: Path
) -> None:
    console = Console()
    page = open_page(browser, console)
    page.goto(f"{demo}/map")

    expect(page).to_have_title("TrackStore fleet map")
    devices = located_devices(demo)
    assert len(devices) == DEMO_DEVICES
    markers = page.locator(".bus-marker")
    expect(markers).to_have_count(len(devices), timeout=TIMEOUT_MS)
    expect(page.locator("#device-count")).to_have_text(f"{len(devices)} devices")
    expect(page.locator("#connection")).to_have_text("live")
    expect(page.locator("#tiles-note")).to_be_visible()  # offline: the plain background
    shown = {markers.nth(i).get_attribute("data-device-id") for i in range(len(devices))}
    assert shown == {device["deviceId"] for device in devices}

    # A bus moves on the screen as its positions stream in.
    before = marker_centres(page)
    moved = page.wait_for_function(MOVED_AND_CLICKABLE, arg=before, timeout=TIMEOUT_MS)
    bus = moved.json_value()[0]

    # Clicking it tells about it and draws its track, which grows as the bus reports.
    page.locator(f'.bus-marker[data-device-id="{bus}"]').click()
    popup = page.locator(".leaflet-popup-content")
    expect(popup).to_contain_text(bus)
    expect(popup).to_contain_text("km/h")
    expect(popup).to_contain_text("active")
    points, vertices = wait_for_track(page, "1 h")
    assert points >= 3, f"{points} points"
    assert vertices >= 2
    page.wait_for_function(
        "(n) => Number((/(\\d+) point/.exec(document.querySelector('#track-text').textContent)"
        " || [0, 0])[1]) > n",
        arg=points,
        timeout=TIMEOUT_MS,
    )

    # Another window draws the track again.
    old = page.locator("path.track").element_handle()
    page.get_by_label("Track window").select_option(label="15 min")
    page.wait_for_function("(path) => !path.isConnected", arg=old, timeout=TIMEOUT_MS)
    points, _ = wait_for_track(page, "15 min")
    assert points >= 3

    picture = save_screenshot(page, tmp_path)
    assert picture.stat().st_size > 20_000, f"a blank page? see {picture}"
    assert console.errors == []
    # Tiles were asked for (the CSP let them through), and nothing else outside.
    assert outside.hosts_asked_by_the_page() == {TILE_HOST}
    page.context.close()


def test_the_map_asks_for_a_key_and_then_shows_the_fleet(browser: Browser, keyed: str) -> None:
    assert httpx.get(f"{keyed}/devices", timeout=10).status_code == 401
    console = Console(allow_probe_401=True)
    page = open_page(browser, console)
    page.goto(f"{keyed}/map")

    dialog = page.get_by_role("dialog", name="API key needed")
    expect(dialog).to_be_visible()
    expect(page.locator("#connection")).to_have_text("API key needed")
    expect(page.locator(".bus-marker")).to_have_count(0)

    page.get_by_label("API key", exact=True).fill("not-the-key-0123456789")
    page.get_by_role("button", name="Show the fleet").click()
    expect(page.locator("#key-error")).to_contain_text("not accepted")
    page.get_by_label("API key", exact=True).fill(API_KEY)
    page.get_by_role("button", name="Show the fleet").click()

    expect(dialog).to_be_hidden()
    expect(page.locator(".bus-marker")).to_have_count(SEEDED_DEVICES)
    expect(page.locator("#connection")).to_have_text("live")

    # The seeded tracks are two hours of points 10 s apart: the window decides how many show.
    page.locator('.bus-marker[data-device-id="bus-0001"]').click()
    points, vertices = wait_for_track(page, "1 h")
    assert 330 <= points <= 361, points
    assert vertices >= 3
    page.get_by_label("Track window").select_option(label="15 min")
    points, _ = wait_for_track(page, "15 min")
    assert 80 <= points <= 91, points
    page.get_by_label("Track window").select_option(label="6 h")
    points, _ = wait_for_track(page, "6 h")
    assert points == SEED_POINTS

    # The key stays for the tab: a reload asks for nothing.
    page.reload()
    expect(page.locator(".bus-marker")).to_have_count(SEEDED_DEVICES)
    expect(dialog).to_be_hidden()
    assert console.errors == []
    page.context.close()


def test_a_key_in_the_address_is_kept_and_taken_out_of_it(browser: Browser, keyed: str) -> None:
    console = Console()
    page = open_page(browser, console)
    page.goto(f"{keyed}/map#key={API_KEY}")

    expect(page.locator(".bus-marker")).to_have_count(SEEDED_DEVICES)
    expect(page.get_by_role("dialog")).to_be_hidden()
    assert page.url == f"{keyed}/map"
    assert page.evaluate("sessionStorage.getItem('trackstore.apiKey')") == API_KEY
    assert console.errors == []
    page.context.close()
