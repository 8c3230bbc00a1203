"""The Posterior page in a real browser (Playwright + Debian's chromium), on the shipped 2-D model.

Screenshots at 1024 and 1400 px wide go to /tmp/shots-posterior/ for a person to look at."""

from pathlib import Path

import pytest

from tests.test_browser import browser, screenshot_on_failure, server, settle  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser

SHOTS = Path("/tmp/shots-posterior")


@pytest.mark.parametrize("width", [1024, 1400])
def test_posterior_page_draws_the_exact_posterior(server, browser, width):  # noqa: F811
    """Deep link to the Posterior page on mnist-2d: no exception, the Plotly posterior map with its
    heat map, and the identity's residual shown."""
    context = browser.new_context(viewport={"width": width, "height": 2600})
    page = context.new_page()
    try:
        with screenshot_on_failure(page, f"posterior-{width}"):
            page.goto(f"{server}/Posterior?ckpt=checkpoints%2Fmnist-2d&steps=100")
            settle(page, "Posterior")
            page.locator(".js-plotly-plot .heatmaplayer").first.wait_for(timeout=120_000)
            page.get_by_text("residual (nats)").first.wait_for(timeout=30_000)
            page.wait_for_timeout(1500)
            assert page.locator(".stException").count() == 0
            assert page.locator(".js-plotly-plot").count() >= 3  # the map, the gap bar, the IWAE curve
            SHOTS.mkdir(exist_ok=True)
            page.screenshot(path=str(SHOTS / f"posterior-{width}.png"), full_page=True)
    finally:
        context.close()
