"""What a new user hit (issue 21), in a real Chromium: a copied link opened in a fresh browser context
draws the same view, the Encode page holds its layout at 1024 px, and the Atlas forgets a decoded
position when its projection changes.

Reuses the server and browser fixtures of tests/test_browser.py (skipped, like it, without chromium).
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests import test_browser as base
from tests.test_browser import screenshot_on_failure, settle
from tests.test_encode_page import digit_png

server, browser, page = base.server, base.browser, base.page  # the fixtures, shared by name
pytestmark = pytest.mark.browser

MAIN = "[data-testid=stMain]"
# null while a rerun replaces the figure
GRID_IMAGE = "() => document.querySelector('.js-plotly-plot')?.layout?.images?.[0]?.source ?? null"
STRIP = f"{MAIN} [data-testid=stImage] img"


def fresh_page(browser, url: str, title: str, width: int = 1400) -> Page:
    """`url` opened in a new browser context (no cookies, no session), after its first run."""
    tab = browser.new_context(viewport={"width": width, "height": 1000}).new_page()
    tab.goto(url)
    settle(tab, title)
    return tab


def changed(tab: Page, script: str, before: str) -> str:
    """Wait until `script` (a JS function) returns something, other than `before`; returns it."""
    tab.wait_for_function(f"b => {{ const v = ({script})(); return v !== null && v !== b; }}", arg=before,
                          timeout=90_000)  # fmt: skip
    return tab.evaluate(script)


def test_a_copied_latent_grid_link_draws_the_same_slice(server, browser, page):
    """On a 32-D model, a slice through a prior sample of seed 5: the copied URL, opened in a fresh
    context, draws the same decoded grid, with the same source and seed in its widgets."""
    with screenshot_on_failure(page, "ux-grid-link"):
        page.goto(f"{server}/Latent_grid?ckpt=checkpoints%2Fmnist-best&n=6")
        settle(page, "Latent grid")
        before = page.evaluate(GRID_IMAGE)
        page.locator(f"{MAIN} [data-testid=stRadio]").get_by_text("random prior sample").click()
        before = changed(page, GRID_IMAGE, before)
        seed = page.get_by_label("seed")
        seed.fill("5")
        seed.press("Enter")
        drawn = changed(page, GRID_IMAGE, before)
        page.wait_for_url("**through_seed=5**", timeout=10_000)
        other = fresh_page(browser, page.url, "Latent grid")
        try:
            assert other.evaluate(GRID_IMAGE) == drawn
            assert other.get_by_label("seed").input_value() == "5"
        finally:
            other.context.close()


def test_a_copied_interpolation_link_draws_the_same_strip(server, browser, page):
    """Endpoint A a prior sample, 6 steps, linear: the copied URL in a fresh context draws the same strip."""
    with screenshot_on_failure(page, "ux-interpolate-link"):
        page.goto(f"{server}/Interpolate")
        settle(page, "Interpolate")
        strip = lambda tab: tab.locator(STRIP).first.evaluate("img => img.src")  # noqa: E731
        before = strip(page)
        page.locator(f"{MAIN} [data-testid=stRadio]").first.get_by_text("random prior sample").click()
        page.wait_for_url("**a=random**", timeout=30_000)
        page.locator(f"{MAIN} [data-testid=stRadio]").get_by_text("linear", exact=True).click()
        page.wait_for_url("**method=linear**", timeout=30_000)
        page.wait_for_function(
            f"b => document.querySelector('{STRIP}').src !== b", arg=before, timeout=60_000
        )
        page.wait_for_timeout(1000)  # the last rerun's strip
        drawn = strip(page)
        other = fresh_page(browser, page.url, "Interpolate")
        try:
            assert strip(other) == drawn
        finally:
            other.context.close()


@pytest.fixture
def narrow(browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1024, "height": 900})
    yield context.new_page()
    context.close()


OVERFLOW = """() => {
  const BUTTONS = '[data-testid=stMain] [data-testid=stButton] button';
  const boxes = sel => [...document.querySelectorAll(sel)].map(e => e.getBoundingClientRect());
  const cut = sel => [...document.querySelectorAll(sel)]
    .flatMap(root => [root, ...root.querySelectorAll('*')])
    .filter(e => e instanceof HTMLElement && e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
    .map(e => e.textContent.trim()).filter(t => t);
  const images = boxes('[data-testid=stMain] [data-testid=stImage] img');
  const overlaps = images.flatMap((a, i) => images.slice(i + 1).filter(b =>
    a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1));
  const outside = [...images, ...boxes(BUTTONS)].filter(b => b.right > innerWidth);
  return {scroll: document.scrollingElement.scrollWidth, width: innerWidth, overlaps: overlaps.length,
          outside: outside.length, cut: cut('[data-testid=stMetric], ' + BUTTONS)};
}"""


def test_encode_holds_its_layout_at_1024_px(server, narrow, tmp_path: Path):
    """At 1024 px the encoded digit's page has no horizontal overflow, no overlapping images, no image or
    button past the viewport, and no metric or button label cut short."""
    with screenshot_on_failure(narrow, "ux-encode-1024"):
        image = tmp_path / "one.png"
        image.write_bytes(digit_png())
        narrow.goto(f"{server}/Encode?input=upload")
        narrow.get_by_role("heading", name="Encode", level=1).wait_for(timeout=90_000)
        narrow.locator(f"{MAIN} input[type=file]").set_input_files(str(image))
        narrow.get_by_text("Nearest test images").wait_for(timeout=90_000)
        narrow.wait_for_timeout(1000)
        layout = narrow.evaluate(OVERFLOW)
        assert layout["scroll"] <= layout["width"], layout
        assert (layout["overlaps"], layout["outside"], layout["cut"]) == (0, 0, []), layout


def test_switching_the_projection_forgets_the_decoded_position(server, page):
    """A click on empty space of the latent plane decodes it; after switching to PCA that stale decode
    is gone."""
    with screenshot_on_failure(page, "ux-atlas-stale"):
        page.goto(f"{server}/Atlas?ckpt=checkpoints%2Fmnist-2d&atlas_method=latent")
        settle(page, "Atlas")
        canvas = page.locator(f"{MAIN} [data-testid=stVegaLiteChart] canvas").first
        canvas.wait_for(timeout=90_000)
        box = canvas.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.12, box["y"] + box["height"] * 0.8)
        page.get_by_text("map position (").wait_for(timeout=30_000)
        page.locator(f"{MAIN} [data-testid=stRadio]").get_by_text("PCA", exact=True).click()
        page.get_by_text("projected by PCA").wait_for(timeout=60_000)
        page.get_by_text("click empty space to decode it here").wait_for(timeout=30_000)
        assert page.get_by_text("map position (").count() == 0
        assert page.locator(".stException").count() == 0
