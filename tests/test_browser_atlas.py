"""The Atlas page in a real Chromium: hover shows a point's image, a mouse-drawn box selects images.

Reuses the server and browser fixtures of tests/test_browser.py (skipped, like it, without chromium).
"""

from playwright.sync_api import Page

from tests import test_browser as base
from tests.test_browser import screenshot_on_failure, settle

server, browser, page = base.server, base.browser, base.page  # the fixtures, shared by name

CHART = "[data-testid=stMain] [data-testid=stVegaLiteChart] canvas"


def open_atlas(page: Page, server: str) -> dict:
    """Open the Atlas page on the 2-D default; returns the map canvas's bounding box."""
    page.goto(f"{server}/Atlas?ckpt=checkpoints%2Fmnist-2d&atlas_method=latent")
    settle(page, "Atlas")
    canvas = page.locator(CHART).first
    canvas.wait_for(timeout=90_000)
    return canvas.bounding_box()


def test_hover_shows_an_image(server, page):
    """Hovering the map shows a tooltip holding an image (a test digit or the image decoded there)."""
    with screenshot_on_failure(page, "atlas-hover"):
        box = open_atlas(page, server)
        page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.45)
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=5)
        image = page.locator("#vg-tooltip-element img")
        image.wait_for(timeout=10_000)
        assert image.evaluate("img => img.src").startswith("data:image/png;base64,")


def test_box_selection_shows_the_selected_images(server, page):
    """Dragging a box over the middle of the map lists the points inside with their images and ELBO."""
    with screenshot_on_failure(page, "atlas-box"):
        box = open_atlas(page, server)
        page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=10)
        page.mouse.up()
        heading = page.get_by_role("heading", name="Selected:")
        page.wait_for_function(
            "() => [...document.querySelectorAll('h3')].some(h => /Selected: [1-9]/.test(h.textContent))",
            timeout=30_000,
        )
        assert int(heading.text_content().split()[1]) > 0
        originals = page.locator("[data-testid=stImage]", has_text="originals")
        originals.first.wait_for(timeout=30_000)
        page.locator("[data-testid=stMain] [data-testid=stDataFrame]").wait_for(timeout=30_000)
        assert page.locator(".stException").count() == 0


def test_click_on_empty_space_decodes_it(server, page):
    """Clicking the empty lower-left corner of the plot decodes that map position."""
    with screenshot_on_failure(page, "atlas-click"):
        box = open_atlas(page, server)
        page.mouse.click(box["x"] + box["width"] * 0.12, box["y"] + box["height"] * 0.8)
        page.get_by_text("map position (").wait_for(timeout=30_000)
        assert page.locator(".stException").count() == 0
