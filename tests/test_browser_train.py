"""The Train page in a real browser: start a tiny run from the form and watch its curves grow live.

Reuses the `streamlit run app.py` server and Chromium of tests/test_browser.py, with VAE_RUNS_DIR
pointing at a temporary folder and a small synthetic dataset given as the form's data folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import environ
from tests.test_browser import browser, page, screenshot_on_failure, server  # noqa: F401  (fixtures)
from tests.test_cli import idx_folder

pytestmark = pytest.mark.browser
CURVES = "[data-testid=stMain] .js-plotly-plot"
TRAIN_POINTS = f"document.querySelector('{CURVES}')._fullData[0].x.length"  # the train ELBO curve
# 150 epochs of 128 steps on the 256 synthetic images: long enough (tens of seconds) that the page sees
# the run while it trains, however fast the machine, and a step is logged every 20.
EPOCHS, BATCH = 150, 2
LOGGED_STEPS = EPOCHS * 256 // BATCH // 20


@pytest.fixture(scope="module", autouse=True)
def runs_env(tmp_path_factory) -> Iterator[Path]:
    """Runs in a temporary folder, re-read every second; set before the server starts."""
    runs = tmp_path_factory.mktemp("runs")
    with environ(VAE_RUNS_DIR=str(runs), VAE_TRAIN_REFRESH_S="1"):
        yield runs


def test_start_a_run_and_see_the_curves_update(server, page, runs_env, tmp_path) -> None:  # noqa: F811
    """Submitting the form starts a run whose curves appear and grow without a reload, until it finishes."""
    data = idx_folder(tmp_path / "data")
    with screenshot_on_failure(page, "train-run"):
        page.goto(f"{server}/Train")
        page.get_by_role("heading", name="Train", level=1).wait_for(timeout=90_000)
        page.get_by_role("textbox", name="hidden sizes", exact=True).fill("16")
        page.get_by_role("spinbutton", name="epochs", exact=True).fill(str(EPOCHS))
        page.get_by_role("spinbutton", name="batch size (images / step)", exact=True).fill(str(BATCH))
        page.get_by_role("textbox", name="run name", exact=True).fill("browser-run")
        page.get_by_text("Advanced").click()
        page.get_by_role("textbox", name="data folder", exact=True).fill(str(data))
        page.get_by_role("button", name="Start training").click()

        page.locator(CURVES).first.wait_for(timeout=120_000)
        page.wait_for_function(f"{TRAIN_POINTS} > 0", timeout=120_000)
        first = page.evaluate(TRAIN_POINTS)
        page.wait_for_function(f"{TRAIN_POINTS} > {first}", timeout=120_000)  # it grows by itself
        page.get_by_text("Finished:").first.wait_for(timeout=180_000)
        page.wait_for_function(f"{TRAIN_POINTS} == {LOGGED_STEPS}", timeout=30_000)  # every logged step
        page.locator("[data-testid=stMain] [data-testid=stImage] img").first.wait_for()  # the timelapse grid
        assert page.locator(".stException").count() == 0
    assert (runs_env / "browser-run" / "model.pt").is_file()
