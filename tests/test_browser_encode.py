"""The Encode page in a real browser: a digit drawn with the mouse on the canvas, and a real file upload.

Reuses the `streamlit run` server and Chromium fixtures of tests/test_browser.py (which skips this module
too when Chromium or the shipped checkpoint is missing); screenshots go to test-artifacts/ on failure.
"""

import itertools
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.test_browser import browser, page, screenshot_on_failure, server  # noqa: F401  (fixtures)
from tests.test_encode_page import digit_png

pytestmark = pytest.mark.browser

MAIN = "[data-testid=stMain]"
CANVAS = f"{MAIN} canvas.upper-canvas"  # fabric.js draws on its upper canvas; the component has no iframe


def open_encode(tab: Page, url: str, mode: str) -> None:
    tab.goto(f"{url}/Encode?input={mode}")
    tab.get_by_role("heading", name="Encode", level=1).wait_for(timeout=90_000)


def wait_for_result(tab: Page) -> None:
    """The model's input and its reconstruction are shown, without an exception or an error."""
    tab.get_by_text("reconstruction (decoded posterior mean)").wait_for(timeout=90_000)
    tab.locator(MAIN).get_by_text("ELBO (nats / image)", exact=True).wait_for(timeout=30_000)
    assert tab.locator(f"{MAIN} [data-testid=stImage] img").count() >= 3
    assert tab.locator(".stException").count() == 0
    assert tab.locator(f"{MAIN} [data-testid=stAlertContentError]").count() == 0


def test_drawing_a_digit_shows_its_reconstruction(server, page):  # noqa: F811
    """A '7' drawn with the mouse on the canvas is preprocessed, encoded and reconstructed."""
    with screenshot_on_failure(page, "encode-draw"):
        open_encode(page, server, "draw")
        canvas = page.locator(CANVAS).first
        canvas.wait_for(timeout=90_000)
        box = canvas.bounding_box()
        corners = [(0.25, 0.22), (0.75, 0.22), (0.5, 0.85)]  # top bar, then the diagonal down
        page.mouse.move(box["x"] + box["width"] * corners[0][0], box["y"] + box["height"] * corners[0][1])
        page.mouse.down()
        for (x0, y0), (x1, y1) in itertools.pairwise(corners):
            for t in range(1, 16):
                x, y = x0 + (x1 - x0) * t / 15, y0 + (y1 - y0) * t / 15
                page.mouse.move(box["x"] + box["width"] * x, box["y"] + box["height"] * y)
        page.mouse.up()
        wait_for_result(page)
        page.get_by_text("original: your drawing").wait_for(timeout=10_000)


def test_uploading_a_file_shows_its_reconstruction(server, page, tmp_path: Path):  # noqa: F811
    """A PNG chosen in the file uploader is encoded, with its place among the test images."""
    with screenshot_on_failure(page, "encode-upload"):
        image = tmp_path / "one.png"
        image.write_bytes(digit_png(ink=30, paper=230))
        open_encode(page, server, "upload")
        page.locator(f"{MAIN} input[type=file]").set_input_files(str(image))
        wait_for_result(page)
        page.get_by_text("original: one.png").wait_for(timeout=10_000)
        page.get_by_text("Nearest test images").wait_for(timeout=30_000)
