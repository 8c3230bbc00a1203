"""Every page in a real browser on a tiny colour model (32 x 32 RGB, logistic, trained on a generated
folder with broken files; tests/colour_model.py), with an upload on Encode and a hover on the Atlas.

Screenshots of every page at 1400 px go to test-artifacts/colour-*.png for a person to look at."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from explorer import paths
from tests.colour_model import colour_env, colour_run  # noqa: F401  (fixtures)
from tests.helpers import pages_but
from tests.test_browser import ARTIFACTS, browser, screenshot_on_failure, server, settle  # noqa: F401

pytestmark = pytest.mark.browser

WIDTH = 1400
TALL = {"Train": 3000, "Atlas": 2400, "": 2000}  # viewport heights that hold the whole page
PAGES = pages_but("Encode")  # an upload: its own test below


@pytest.fixture(scope="module", autouse=True)
def trained(colour_run: Path) -> Path:  # noqa: F811
    """The colour run, trained (and its folders set in the environment) before the server starts."""
    return colour_run


def url(base: str, path: str, run: Path, **query: str) -> str:
    extra = "".join(f"&{k}={quote(v)}" for k, v in query.items())
    return f"{base}/{path}?ckpt={quote(paths.shown(run), safe='')}{extra}"


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"colour-{name}.png"), full_page=True)


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_renders_the_colour_model(server, browser, trained, path):  # noqa: F811
    """Each page opens on the colour model with its pictures and no exception shown."""
    context = browser.new_context(viewport={"width": WIDTH, "height": TALL.get(path, 1400)})
    page = context.new_page()
    try:
        with screenshot_on_failure(page, f"colour-{path or 'overview'}-failed"):
            page.goto(url(server, path, trained, steps="50"))
            if path == "Train":
                page.get_by_role("heading", name="Train", level=1).wait_for(timeout=90_000)
                page.get_by_text("Latent timelapse").wait_for(timeout=90_000)
            else:
                settle(page, PAGES[path])
            page.wait_for_timeout(2500)
            if path == "Atlas":  # a hover over the map shows an image (a test image's, or decoded there)
                box = page.locator("[data-testid=stMain] [data-testid=stVegaLiteChart]").first.bounding_box()
                page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5)
                page.wait_for_timeout(1500)
            assert page.locator(".stException").count() == 0
            shoot(page, path or "overview")
    finally:
        context.close()


def test_encode_uploads_a_colour_picture(server, browser, trained, tmp_path):  # noqa: F811
    """The Encode page has an uploader and no canvas; an uploaded photo is fitted to 32 x 32, encoded
    and shown beside its reconstruction, with no exception."""
    photo = Image.new("RGB", (120, 80), (250, 240, 200))
    photo.paste((40, 70, 220), (30, 10, 90, 70))
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    (tmp_path / "photo.png").write_bytes(buffer.getvalue())
    context = browser.new_context(viewport={"width": WIDTH, "height": 1400})
    page = context.new_page()
    try:
        with screenshot_on_failure(page, "colour-encode-failed"):
            page.goto(url(server, "Encode", trained))
            page.get_by_role("heading", name="Encode", level=1).wait_for(timeout=90_000)
            page.locator("[data-testid=stMain] [data-testid=stFileUploader]").wait_for(timeout=90_000)
            assert page.locator("canvas").count() == 0
            page.locator("[data-testid=stMain] input[type=file]").set_input_files(str(tmp_path / "photo.png"))
            page.get_by_text("what the model sees (32 × 32)").wait_for(timeout=90_000)
            page.locator("[data-testid=stMain] .js-plotly-plot").first.wait_for(timeout=90_000)
            page.wait_for_timeout(2000)
            assert page.locator(".stException").count() == 0
            shoot(page, "encode")
    finally:
        context.close()
