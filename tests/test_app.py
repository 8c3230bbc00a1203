"""The Streamlit app, run in-process with AppTest: every page, its widgets, the picker, missing data."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

import vae_core.data
from vae_core import VAE, RunSpec, TrainConfig, VAEConfig, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = "checkpoints/mnist-2d"
PAGES = ["pages/1_Latent_grid.py", "pages/2_Sliders.py", "pages/3_Interpolate.py", "pages/4_Compare.py"]

pytestmark = pytest.mark.skipif(
    not (ROOT / DEFAULT / "model.pt").is_file(), reason=f"the shipped checkpoint {DEFAULT} is not there yet"
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """The disk cache of scores and maps in a folder of this test session, not the project's."""
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "app-cache"))


def make_checkpoint(path: Path, latent_dim: int) -> str:
    """An untrained MNIST checkpoint whose stored KL marks its last dimension inactive, said to be
    trained in mixed precision."""
    torch.manual_seed(0)
    kl = [float(latent_dim - i) for i in range(latent_dim - 1)] + [0.0]
    metrics = {
        "elbo": -500.0,
        "recon": 490.0,
        "kl": sum(kl),
        "kl_per_dim": kl,
        "active_units": latent_dim - 1,
    }
    model = VAE(VAEConfig(latent_dim=latent_dim, hidden=(32,)))
    save_checkpoint(
        path,
        model,
        spec=RunSpec(model=model.config, train=TrainConfig(precision="bf16")),
        metrics=metrics,
        epoch=1,
        step=10,
    )
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A 3-D checkpoint outside the project."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-3d", 3)


def run(page: str | None = None, **query: str) -> AppTest:
    """The app after one run of `page` (the home page if None), opened with the given query parameters."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params.update(query)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def images(at: AppTest) -> list[str]:
    return [image.proto.imgs[0].url for image in at.image]


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def plotly_array(value: dict | list) -> np.ndarray:
    """An array from a Plotly spec: a list, or a typed array {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, list):
        return np.array(value)
    array = np.frombuffer(base64.b64decode(value["bdata"]), np.dtype(value["dtype"]))
    return array.reshape([int(n) for n in str(value.get("shape", len(array))).split(",")])


def card_value(at: AppTest, field: str) -> str:
    """A row of the model card: from the sidebar, or from the Overview's table (its one card there)."""
    line = next((m.value for m in at.sidebar.markdown if f"**{field}**" in m.value), None)
    if line is None:
        return at.table[0].value.loc[field, "value"]
    return line.split(f"**{field}**: ")[1].split("\n")[0]


@pytest.mark.parametrize("page", [None, *PAGES])
def test_page_renders_on_the_default_checkpoint(page):
    """Every page renders without an exception or error on the shipped default checkpoint."""
    at = run(page)
    assert not at.error
    assert at.sidebar.selectbox(key="_ckpt_widget").value == DEFAULT
    assert at.query_params["ckpt"] == DEFAULT


def test_overview_temperature_changes_the_samples():
    """Moving the temperature slider changes the prior samples and the URL."""
    at = run()
    before = images(at)
    at.slider(key="temperature").set_value(0.3).run()
    assert images(at)[0] != before[0]
    assert at.query_params["temperature"] == "0.3"


def test_overview_shows_the_model_card_and_latex():
    """The home page explains the ELBO and shows test ELBO in nats per image."""
    at = run()
    assert any("ELBO" in latex.value for latex in at.latex)
    assert "nats / image" in at.table[0].value.index.str.cat()


def test_latent_grid_size_changes_the_figure():
    """A different grid size redraws the map and is kept in the URL."""
    at = run(PAGES[0])
    before = at.get("plotly_chart")[0].proto.spec
    at.slider(key="n").set_value(7).run()
    assert at.get("plotly_chart")[0].proto.spec != before
    assert at.query_params["n"] == "7"


def test_latent_grid_map_holds_the_decoded_grid_and_clickable_cells():
    """The map's background is the 7×7 decoded grid, and each cell carries its z for a click."""
    at = run(PAGES[0], n="7", spacing="range", range="2.0")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    source = spec["layout"]["images"][0]["source"]
    grid = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
    assert grid.size == (7 * 29 + 1, 7 * 29 + 1)  # 28-pixel digits with a 1-pixel white border
    cells = next(trace for trace in spec["data"] if trace.get("name") == "grid cells")
    z = plotly_array(cells["customdata"])
    np.testing.assert_allclose(np.unique(z[:, 0]), np.linspace(-2, 2, 7), atol=1e-6)
    np.testing.assert_allclose(plotly_array(cells["x"]), z[:, 0], atol=1e-6)  # a range grid is drawn in z
    assert any(trace.get("name") == "test images" for trace in spec["data"])


def test_latent_grid_typed_point_goes_to_the_sliders():
    """Sending a typed point fills the Sliders page with it."""
    at = run(PAGES[0])
    at.number_input(key="send_x").set_value(1.5)
    at.number_input(key="send_y").set_value(-0.5)
    button(at, "Send to sliders").click().run()
    assert at.session_state["z"] == [1.5, -0.5]
    at.switch_page(PAGES[1]).run()
    assert at.slider(key="zs_0").value == 1.5 and at.slider(key="zs_1").value == -0.5


def test_latent_grid_deep_link_restores_settings():
    """Opening the grid with query parameters restores its controls."""
    at = run(PAGES[0], n="5", spacing="range", range="2.0")
    assert at.slider(key="n").value == 5 and at.radio(key="spacing").value == "range"
    assert at.slider(key="range").value == 2.0


def test_sliders_move_the_decoded_image():
    """Moving a latent slider re-decodes the image and updates z in the URL."""
    at = run(PAGES[1])
    before = images(at)
    at.slider(key="zs_0").set_value(2.0).run()
    assert images(at) != before
    assert at.query_params["z"].startswith("2.00,")


def test_sliders_start_from_a_test_image():
    """ "Start from this point" sets the sliders to the chosen test image's posterior mean."""
    at = run(PAGES[1])
    button(at, "Start from this point").click().run()
    assert [at.slider(key=f"zs_{i}").value for i in range(2)] != [0.0, 0.0]


def test_sliders_order_and_mark_dimensions_by_kl(tiny, monkeypatch):
    """A 3-D model gets its sliders ordered by KL with the inactive dimension marked."""
    monkeypatch.setenv("VAE_CHECKPOINT", tiny)
    at = run(PAGES[1])
    labels = [s.label for s in at.slider]
    assert labels[0].startswith("z[0]") and labels[1].startswith("z[1]") and "inactive" in labels[2]


@pytest.mark.parametrize("page", [None, *PAGES])
def test_page_renders_on_a_3d_model(tiny, monkeypatch, page):
    """Every page also works for latent_dim > 2 (dimension choosers, PCA map)."""
    monkeypatch.setenv("VAE_CHECKPOINT", tiny)
    at = run(page, ckpt=tiny)
    assert not at.error


def test_many_dimensions_all_get_sliders(tmp_path, monkeypatch):
    """At 20 dimensions every one has a slider (none a number input), the inactive one folded away."""
    monkeypatch.setenv("VAE_CHECKPOINT", make_checkpoint(tmp_path / "wide-20d", 20))
    at = run(PAGES[1], ckpt=str(tmp_path / "wide-20d"))
    assert len(at.slider) == 20 and not [n for n in at.main.number_input if n.key.startswith("zs_")]
    assert at.slider[0].label.startswith("z[0]")
    assert [s.key for s in at.expander[0].slider] == ["zs_19"]


def test_interpolation_steps_change_the_strip():
    """More steps give a different strip, and the setting goes into the URL."""
    at = run(PAGES[2])
    before = images(at)[0]
    at.slider(key="steps").set_value(5).run()
    assert images(at)[0] != before
    assert at.query_params["steps"] == "5"


def test_compare_shows_both_cards(tiny, monkeypatch):
    """The comparison table has one column per checkpoint."""
    monkeypatch.setenv("VAE_CHECKPOINT", tiny)
    at = run(PAGES[3], ckpt=DEFAULT, other=tiny)
    columns = list(at.table[0].value.columns)
    assert columns == [f"A: {DEFAULT}", f"B: {tiny}"]


def test_compare_seed_redraws_both_prior_samples(tiny, monkeypatch):
    """A new seed gives both models new prior samples and is kept in the URL."""
    monkeypatch.setenv("VAE_CHECKPOINT", tiny)
    at = run(PAGES[3], ckpt=DEFAULT, other=tiny)
    before = images(at)[-2:]
    at.number_input(key="compare_seed").set_value(7).run()
    after = images(at)[-2:]
    assert after[0] != before[0] and after[1] != before[1]
    assert at.query_params["compare_seed"] == "7"


def test_picker_switches_checkpoint(tiny, monkeypatch):
    """$VAE_CHECKPOINT selects a model at start and the sidebar picker switches to another."""
    monkeypatch.setenv("VAE_CHECKPOINT", tiny)
    at = run()
    assert card_value(at, "latent dim") == "3"
    assert card_value(at, "training precision") == "bf16 (mixed)"
    at.sidebar.selectbox(key="_ckpt_widget").select(DEFAULT).run()
    assert card_value(at, "latent dim") == "2"
    assert "training precision" not in at.table[0].value.index  # float32: the default
    assert at.query_params["ckpt"] == DEFAULT
    at.switch_page(PAGES[0]).run()
    assert card_value(at, "latent dim") == "2"


def test_checkpoint_argument_selects_the_model(tiny, monkeypatch):
    """`streamlit run app.py -- --checkpoint PATH` starts on that checkpoint."""
    monkeypatch.setattr("sys.argv", ["app.py", "--checkpoint", tiny])
    at = run(PAGES[0])
    assert at.sidebar.selectbox(key="_ckpt_widget").value == tiny
    assert [s.label for s in at.selectbox][:2] == ["horizontal dimension", "vertical dimension"]


def test_missing_data_says_how_to_get_it(tiny, tmp_path, monkeypatch):
    """Without the test set the pages say how to provide it, never download, and still draw samples."""
    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VAE_CHECKPOINT", tiny)  # Compare needs a second MNIST model to want test images
    monkeypatch.setattr(vae_core.data, "_download", lambda *a: pytest.fail("the app tried to download"))
    for page in [None, *PAGES]:
        at = run(page, ckpt=DEFAULT, other=tiny)
        warning = " ".join(w.value for w in at.warning)
        assert "--data-dir" in warning and "VAE_DATA_DIR" in warning, page
    at = run(ckpt=DEFAULT)
    assert len(at.image) == 1  # the prior samples need only the model


def test_bad_checkpoint_is_an_error_message(tmp_path, monkeypatch):
    """An unreadable checkpoint is shown with st.error, not a traceback."""
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setenv("VAE_CHECKPOINT", str(tmp_path / "broken"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert "Cannot load" in at.error[0].value
