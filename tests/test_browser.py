"""The real app in a real browser: `streamlit run app.py` driven by Playwright through Debian's chromium.

Screenshots are written under test-artifacts/ only when a check fails.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import pages_but

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
PAGES = pages_but("Posterior")  # tests/test_browser_posterior.py has its own

pytestmark = pytest.mark.browser

if not CHROMIUM.is_file():
    pytest.skip(
        "needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)", allow_module_level=True
    )
if not (ROOT / "checkpoints/mnist-2d/model.pt").is_file():
    pytest.skip("the shipped checkpoint checkpoints/mnist-2d is not there yet", allow_module_level=True)

from playwright.sync_api import Page, sync_playwright  # noqa: E402  (only once chromium is known to exist)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """`streamlit run app.py` on a free port, healthy; yields its base URL."""
    port = free_port()
    log = (tmp_path_factory.mktemp("streamlit") / "server.log").open("w")
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.fileWatcherType", "none"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start; see {log.name}") from None
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:  # a numba compile in the UMAP warm-up thread can hold the interpreter for a while
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator[Page]:
    """A fresh browser context per test: a new Streamlit session, as a first visit would be."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


@contextmanager
def screenshot_on_failure(page: Page, name: str) -> Iterator[None]:
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        raise


CONTENT = (
    "[data-testid=stMain] [data-testid=stImage] img, [data-testid=stMain] .js-plotly-plot, "
    "[data-testid=stMain] canvas, [data-testid=stMain] [data-testid=stForm]"
)


def settle(page: Page, title: str) -> None:
    """Wait for the page's title, then for its first image or figure (the end of the first run)."""
    page.get_by_role("heading", name=title, level=1).wait_for(timeout=90_000)
    page.locator(CONTENT).first.wait_for(timeout=90_000)
    page.wait_for_timeout(500)


def decoded_src(page: Page) -> str:
    return page.locator("[data-testid=stMain] [data-testid=stImage] img").first.evaluate("img => img.src")


@pytest.mark.parametrize("path", list(PAGES))
def test_deep_link_opens_the_page(server, page, path):
    """Opening each page's URL directly shows that page, without an exception."""
    with screenshot_on_failure(page, f"deep-link-{path or 'home'}"):
        page.goto(f"{server}/{path}")
        settle(page, PAGES[path])
        assert page.locator(".stException").count() == 0


def test_sidebar_visits_every_page(server, page):
    """The sidebar links reach every page, keeping the chosen checkpoint in the URL."""
    with screenshot_on_failure(page, "sidebar"):
        page.goto(server)
        settle(page, PAGES[""])
        for path, title in list(PAGES.items())[1:]:
            page.locator("[data-testid=stSidebarNav], [data-testid=stSidebar]").get_by_role(
                "link", name=title, exact=True
            ).click()
            settle(page, title)
            assert page.url.split("?")[0].endswith(f"/{path}")
            assert "ckpt=checkpoints%2Fmnist-2d" in page.url
            assert page.locator(".stException").count() == 0


def test_slider_changes_the_image(server, page):
    """Moving a latent slider re-renders the decoded image with new bytes."""
    with screenshot_on_failure(page, "slider"):
        page.goto(f"{server}/Sliders")
        settle(page, "Sliders")
        before = decoded_src(page)
        slider = page.locator("[data-testid=stMain] [data-testid=stSlider] input[type=range]").first
        top = float(slider.get_attribute("max"))  # the range comes from the posterior means' quantiles
        slider.focus()
        slider.press("End")
        page.wait_for_function(
            "src => document.querySelector('[data-testid=stMain] [data-testid=stImage] img').src !== src",
            arg=before,
            timeout=30_000,
        )
        assert decoded_src(page) != before
        page.wait_for_url(f"**z={top:.2f}**", timeout=10_000)
        assert page.locator(".stException").count() == 0


def test_shared_url_reopens_the_view(server, page):
    """A URL with the Sliders page's z reopens it with those slider values."""
    with screenshot_on_failure(page, "shared-url"):
        page.goto(f"{server}/Sliders?ckpt=checkpoints%2Fmnist-2d&z=1.50%2C-0.75")
        settle(page, "Sliders")
        values = page.locator("[data-testid=stMain] [data-testid=stSlider] input[type=range]").evaluate_all(
            "sliders => sliders.map(s => s.value)"
        )
        assert sorted(values) == ["-0.75", "1.5"]


def test_clicking_a_grid_cell_sends_its_z(server, page):
    """A click on the latent grid's map hands that cell's z to the Sliders page."""
    with screenshot_on_failure(page, "grid-click"):
        page.goto(f"{server}/Latent_grid?n=10")
        settle(page, "Latent grid")
        box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.3)
        page.get_by_text("to the sliders.").wait_for(timeout=30_000)
        page.get_by_role("link", name="Open it on the Sliders page").click()
        settle(page, "Sliders")
        values = page.locator("[data-testid=stMain] [data-testid=stSlider] input[type=range]").evaluate_all(
            "sliders => sliders.map(s => Number(s.value))"
        )
        assert values != [0, 0] and len(values) == 2
