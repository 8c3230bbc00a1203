"""Every page in a real browser on the shipped colour model, checkpoints/emoji-conv (32 x 32 Noto emoji,
discretised logistic), whose spec names data/emoji: no exception and no error text on any page, and
no digit-model wording on the Overview. Screenshots at 1024 px go to test-artifacts/emoji-*.png.

Skipped when data/emoji is absent (`python checkpoints/build_emoji_folder.py data/emoji` builds it;
CI does)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.helpers import PAGE_TITLES
from tests.test_browser import ARTIFACTS, ROOT, browser, screenshot_on_failure, server, settle  # noqa: F401

pytestmark = pytest.mark.browser

EMOJI = "checkpoints/emoji-conv"
if not (ROOT / EMOJI / "model.pt").is_file():
    pytest.skip(f"the shipped checkpoint {EMOJI} is not there", allow_module_level=True)
if not (ROOT / "data" / "emoji").is_dir():
    pytest.skip(
        "data/emoji is absent: build it with `python checkpoints/build_emoji_folder.py data/emoji`",
        allow_module_level=True,
    )

WIDTH = 1024  # the narrowest width the layout is made for
TALL = {"Train": 3000, "Atlas": 2400, "": 2400, "Compare": 2400}  # viewport heights that hold the page
PAGES = PAGE_TITLES
QUERY = {"Compare": "&other=" + quote("checkpoints/mnist-best", safe=""), "Atlas": "&atlas_method=pca"}


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_renders_the_emoji_model(server, browser, path):  # noqa: F811
    """Each page opens on emoji-conv with no exception and no error message shown."""
    context = browser.new_context(viewport={"width": WIDTH, "height": TALL.get(path, 1600)})
    page = context.new_page()
    try:
        with screenshot_on_failure(page, f"emoji-{path or 'overview'}-failed"):
            page.goto(f"{server}/{path}?ckpt={quote(EMOJI, safe='')}{QUERY.get(path, '')}")
            if path in ("Train", "Encode"):  # a form or an uploader first, no picture
                page.get_by_role("heading", name=PAGES[path], level=1).wait_for(timeout=90_000)
                page.locator("[data-testid=stMain] [data-testid=stForm], [data-testid=stMain] "
                             "[data-testid=stFileUploader]").first.wait_for(timeout=90_000)  # fmt: skip
            else:
                settle(page, PAGES[path])
            page.wait_for_timeout(2500)
            assert page.locator(".stException").count() == 0
            assert page.locator("[data-testid=stAlertContentError]").count() == 0
            if path == "":
                main = page.locator("[data-testid=stMain]").inner_text()
                assert "logistic per pixel" in main and "Bernoulli" not in main and "binarised" not in main
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"emoji-{path or 'overview'}.png"), full_page=True)
    finally:
        context.close()
