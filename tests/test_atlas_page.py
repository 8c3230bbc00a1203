"""The Atlas page run in-process with AppTest: renders, switches method, handles a selection and a click."""

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from vae_core import projection as pj

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = "checkpoints/mnist-2d"
PAGE = "pages/5_Atlas.py"

pytestmark = pytest.mark.skipif(
    not (ROOT / DEFAULT / "model.pt").is_file(), reason=f"the shipped checkpoint {DEFAULT} is not there yet"
)


@pytest.fixture(autouse=True)
def fast(tmp_path_factory, monkeypatch):
    """A private disk cache, and no numba: UMAP is replaced by PCA (test_projection tests UMAP itself)."""
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "atlas-cache"))
    monkeypatch.setattr(pj, "warm_up_umap", lambda: type("Done", (), {"is_alive": lambda self: False})())
    monkeypatch.setattr(pj, "_umap", lambda points, extra, seed, **params: pj._pca(points, extra, seed))


def run(**state: object) -> AppTest:
    """The Atlas page after one run, with session_state preset (e.g. an injected selection)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page(PAGE)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_renders_the_latent_plane_of_a_2d_model():
    """On the 2-D default the page offers the latent plane first and draws the map without errors."""
    at = run()
    assert not at.error
    assert at.radio(key="atlas_method").value == "latent"
    assert at.radio(key="atlas_method").options == ["PCA", "UMAP", "t-SNE", "latent plane"]
    assert at.get("vega_lite_chart")
    assert "posterior means projected by latent plane" in at.caption[0].value


def test_method_switch_shows_its_parameters_and_keeps_the_url():
    """Switching to UMAP shows its sliders and a status box, and puts the method and seed in the URL."""
    at = run()
    at.radio(key="atlas_method").set_value("umap").run()
    assert not at.exception and not at.error
    assert {s.key for s in at.slider} >= {"atlas_n_neighbors", "atlas_min_dist", "atlas_n_epochs"}
    assert at.query_params["atlas_method"] == "umap"
    at.radio(key="atlas_method").set_value("pca").run()
    assert not at.exception and "projected by PCA" in at.caption[0].value


def test_injected_selection_shows_images_scores_and_sends_z():
    """Selected test images appear with reconstructions and ELBO; one goes to the sliders and to A."""
    at = run(atlas_picked=[3, 1, 4])
    assert any(m.value == "Selected: 3 test images" for m in at.subheader)
    table = at.dataframe[0].value
    assert table["index"].tolist() == [3, 1, 4] and (table["ELBO (nats / image)"] < 0).all()
    assert any("reconstructions" in (i.proto.imgs[0].caption or "") for i in at.image)
    next(b for b in at.button if b.label == "to the sliders").click().run()
    scores = pj.cached(pj.cache_key(ROOT / DEFAULT, "test", "scores"), lambda: pytest.fail("not cached"))
    np.testing.assert_allclose(at.session_state["z"], scores["mu"][3], atol=1e-3)
    next(b for b in at.button if b.label == "as interpolation start A").click().run()
    assert at.session_state["a"] == "test image (posterior mean)" and at.session_state["a_img_nth"] == 3


def test_a_click_on_empty_space_decodes_it():
    """A map position (as a click on the lattice leaves it) is decoded and can go to the sliders."""
    at = run(atlas_decode={"map": pj.cache_key(ROOT / DEFAULT, "test", "latent", seed=0), "at": [0.5, -1.0]})
    captions = [i.proto.imgs[0].caption for i in at.image]
    assert "map position (0.50, -1.00)" in captions
    assert any("exact inverse" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Send this z to the sliders").click().run()
    assert at.session_state["z"] == [0.5, -1.0]
