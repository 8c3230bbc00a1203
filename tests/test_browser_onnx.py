"""An ONNX model in a real browser: every page renders it, and a zip of one opens from the sidebar.

Reuses the `streamlit run app.py` server and Chromium of tests/test_browser.py, started with
VAE_CHECKPOINT set to a VAE that is not ours (the pytorch/examples architecture, seeded weights)
exported by the README's recipe into a temporary folder, and VAE_RUNS_DIR pointing at an empty
one. Screenshots at 1400 px go to test-artifacts/.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import torch

from tests.helpers import environ
from tests.test_browser import (  # noqa: F401  (fixtures)
    ARTIFACTS,
    PAGES,
    browser,
    page,
    screenshot_on_failure,
    server,
    settle,
)
from tests.test_onnx import ExamplesVAE, export_by_readme_recipe
from vae_core import onnx_model as om

pytestmark = pytest.mark.browser
ALL_PAGES = {**PAGES, "Posterior": "Posterior"}
PROBLEMS = "[data-testid=stMain] .stException, [data-testid=stAlertContentError]"


@pytest.fixture(scope="module", autouse=True)
def onnx_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A foreign VAE exported by the README's recipe, given to the server as its start-up checkpoint."""
    torch.manual_seed(0)
    folder = export_by_readme_recipe(ExamplesVAE().eval(), tmp_path_factory.mktemp("onnx") / "my-vae")
    runs = tmp_path_factory.mktemp("runs")
    with environ(VAE_CHECKPOINT=str(folder), VAE_RUNS_DIR=str(runs), VAE_WARM_UP_UMAP="0"):
        yield folder


def test_every_page_renders_the_onnx_model(server, page, onnx_env: Path) -> None:  # noqa: F811
    """Each page, opened on the ONNX model, shows its content and no exception or error."""
    for path, title in ALL_PAGES.items():
        with screenshot_on_failure(page, f"onnx-{path or 'home'}"):
            page.goto(f"{server}/{path}")
            settle(page, title)
            assert page.locator(PROBLEMS).count() == 0, page.locator(PROBLEMS).first.inner_text()
            assert quote(str(onnx_env), safe="") in page.url  # the picker's choice, kept in the URL
            if path in ("", "Latent_grid"):
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"onnx-{path or 'home'}-1400.png"), full_page=True)


def test_a_zip_opens_from_the_sidebar(server, page, onnx_env: Path, tmp_path: Path) -> None:  # noqa: F811
    """Uploading a zip of the ONNX folder in "Open a model" selects it and the Sliders page renders it."""
    archive = tmp_path / "my model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in om.FILES:
            z.write(onnx_env / name, f"my-vae/{name}")
    with screenshot_on_failure(page, "onnx-open-zip"):
        page.goto(f"{server}/Sliders")
        settle(page, "Sliders")
        page.get_by_text("Open a model").click()
        page.locator("[data-testid=stSidebar] input[type=file]").set_input_files(str(archive))
        success = page.locator("[data-testid=stSidebar] [data-testid=stAlertContentSuccess]")
        success.wait_for(timeout=60_000)
        assert "imported/my-model-" in success.inner_text()
        settle(page, "Sliders")
        assert "imported%2Fmy-model-" in page.url  # the picker's choice, kept in the URL
        assert page.locator(PROBLEMS).count() == 0
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "onnx-opened-zip-1400.png"), full_page=True)
