"""What a new user hit (issue 21), run in-process with AppTest: links that reopen the same view, a
posterior that can be seen, a decoded position that belongs to its map, and the small things (one
model card, legends and scales, a Compare partner of the same dataset, labelled path ends)."""

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer import figures
from explorer.state import Field
from tests.test_app import DEFAULT, ROOT, plotly_array
from tests.test_encode_page import digit_png
from vae_core import explore as ex
from vae_core import projection as pj

BEST = "checkpoints/mnist-best"  # latent_dim 32: the Latent grid slices through a chosen point
GRID, INTERPOLATE, COMPARE, ATLAS, ENCODE = (
    "pages/1_Latent_grid.py",
    "pages/3_Interpolate.py",
    "pages/4_Compare.py",
    "pages/5_Atlas.py",
    "pages/6_Encode.py",
)

pytestmark = pytest.mark.skipif(
    not (ROOT / DEFAULT / "model.pt").is_file(), reason=f"the shipped checkpoint {DEFAULT} is not there yet"
)


@pytest.fixture(autouse=True)
def fast(tmp_path_factory, monkeypatch):
    """A private disk cache, and no numba behind the Atlas page (as in test_atlas_page)."""
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ux-cache"))
    monkeypatch.setattr(pj, "warm_up_umap", lambda: type("Done", (), {"is_alive": lambda self: False})())


def opened(page: str | None, **query: str) -> AppTest:
    """The app opened at `page` with the query parameters, after its first run, without an exception."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params.update(query)
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def plotly_spec(at: AppTest, index: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def trace(spec: dict, name: str) -> dict:
    return next(t for t in spec["data"] if t.get("name") == name)


def vega_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


# ---------------------------------------------------------------- 1. links reopen the same view


def test_a_copied_latent_grid_link_reopens_the_same_slice():
    """On a 32-D model the grid's slice point (a prior sample with its seed), dimensions and grid are
    in the URL; a fresh session opened on that URL draws the very same decoded grid."""
    at = opened(GRID, ckpt=BEST)
    at.radio(key="through").set_value("random prior sample").run()
    at.number_input(key="through_seed").set_value(5).run()
    at.slider(key="n").set_value(6).run()
    at.selectbox(key="d1").set_value(3).run()
    drawn = plotly_spec(at)["layout"]["images"][0]["source"]
    link = dict(at.query_params)
    shown = (link["through"], link["through_seed"], link["n"], link["d1"])
    assert shown == ("random prior sample", "5", "6", "3")
    again = opened(GRID, **link)
    assert not again.toast
    assert again.radio(key="through").value == "random prior sample"
    assert plotly_spec(again)["layout"]["images"][0]["source"] == drawn


def test_the_test_set_toggle_is_in_the_url():
    """Hiding the encoded test set on the grid writes points=false, and a link with it opens hidden."""
    at = opened(GRID)
    assert any(t.get("name") == "test images" for t in plotly_spec(at)["data"])
    at.toggle(key="points").set_value(False).run()
    assert at.query_params["points"] == "false"
    again = opened(GRID, points="false")
    assert again.toggle(key="points").value is False
    assert not any(t.get("name") == "test images" for t in plotly_spec(again)["data"])


def test_atlas_link_keeps_the_highlights_and_the_training_images():
    """The Atlas's highlight count and its training-images toggle are in the URL and read back."""
    at = opened(ATLAS)
    at.slider(key="atlas_marked").set_value(3).run()
    at.toggle(key="atlas_train").set_value(True).run()
    assert (at.query_params["atlas_marked"], at.query_params["atlas_train"]) == ("3", "true")
    again = opened(ATLAS, **dict(at.query_params))
    assert again.slider(key="atlas_marked").value == 3 and again.toggle(key="atlas_train").value is True


@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False), ("True", True)])
def test_a_toggle_reads_true_and_false(text, value):
    """A toggle's URL value is read as a bool."""
    assert Field(False).parse(text) is value


def test_a_toggle_refuses_other_words():
    """Anything but true or false is refused with why."""
    with pytest.raises(ValueError, match="not true or false"):
        Field(False).parse("1")


# ---------------------------------------------------------------- 3. the posterior can be seen


def test_the_encode_map_opens_zoomed_onto_the_posterior():
    """The map's initial ranges make the 1σ ellipse span at least 15% of the plot (60 px of a plot at
    least 400 px wide), the star is smaller than that, and the test images are still drawn around."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["input"] = "upload"
    at.run()
    at.switch_page(ENCODE).run()
    at.file_uploader(key="upload").upload("one.png", digit_png(), "image/png").run()
    assert not at.exception
    spec = plotly_spec(at)
    ring = np.stack([plotly_array(trace(spec, "1σ of q(z|x)")[a]) for a in "xy"], 1)  # (M, 2)
    ranges = np.array([spec["layout"]["xaxis"]["range"], spec["layout"]["yaxis"]["range"]])  # (2, 2)
    share = (ring.max(0) - ring.min(0)) / (ranges[:, 1] - ranges[:, 0])
    assert share.max() >= 0.15, share
    assert trace(spec, "your digit")["marker"]["size"] < 0.15 * 400
    mu = np.array(at.session_state["encoded_digit"]["mu"])
    assert (ranges[:, 0] < mu).all() and (mu < ranges[:, 1]).all()
    assert len(plotly_array(trace(spec, "test images")["x"])) == figures.MAP_POINTS


def test_posterior_view_has_a_smallest_size():
    """A very narrow posterior is shown in a window of at least MIN_HALF_VIEW each side of its mean."""
    ring = np.array([[1.0, 2.0], [1.001, 2.001]])
    x_range, y_range = figures.posterior_view({2: ring})
    assert x_range[1] - x_range[0] == pytest.approx(2 * figures.MIN_HALF_VIEW)
    assert np.mean(x_range) == pytest.approx(1.0005) and np.mean(y_range) == pytest.approx(2.0005)


# ---------------------------------------------------------------- 5. the Atlas's decoded position


def test_a_decoded_position_is_forgotten_when_the_projection_changes():
    """A position clicked on the latent plane is decoded there; after switching to PCA it is gone,
    and switching back does not bring the stale one back."""
    at = opened(ATLAS)
    key = pj.cache_key(ROOT / DEFAULT, "test", "latent", seed=0)
    at.session_state["atlas_decode"] = {"map": key, "at": [0.5, -1.0]}
    at.run()
    captions = [i.proto.imgs[0].caption for i in at.image]
    assert "map position (0.50, -1.00)" in captions
    at.radio(key="atlas_method").set_value("pca").run()
    assert not at.exception
    assert not any("map position" in (i.proto.imgs[0].caption or "") for i in at.image)
    assert any("click empty space to decode it here" in c.value for c in at.caption)
    at.radio(key="atlas_method").set_value("latent").run()
    assert not any("map position" in (i.proto.imgs[0].caption or "") for i in at.image)


# ---------------------------------------------------------------- 10. small things


def test_the_overview_shows_the_model_card_once():
    """The Overview's card is its table; the sidebar lists it on the other pages only."""
    home = opened(None)
    assert "latent dim" in home.table[0].value.index
    assert not any("**latent dim**" in m.value for m in home.sidebar.markdown)
    grid = opened(GRID)
    assert any("**latent dim**" in m.value for m in grid.sidebar.markdown)


def test_kl_legend_says_active_and_inactive():
    """The KL bars are coloured by a named state, not by a true/false column."""
    spec = figures.kl_chart([3.0, 2.0, 0.001]).to_dict()
    colour = spec["encoding"]["color"]
    assert colour["field"] == "state"
    assert colour["scale"]["domain"] == [figures.ACTIVE, figures.INACTIVE]
    assert [row["state"] for row in next(iter(spec["datasets"].values()))] == [
        "active",
        "active",
        "inactive (KL < 1% of max)",
    ]


def test_the_error_map_has_a_colour_scale():
    """Under the error map a colour bar runs from black at 0 through red and yellow to white at 1."""
    at = opened(None)
    assert any((i.proto.imgs[0].caption or "").startswith("error scale: 0 (black)") for i in at.image)
    row = np.asarray(ex.to_pixels(figures.error_ramp()))[0].astype(int)  # (256, 3), as the PNG holds it
    assert (row[0] == 0).all() and (row[-1] == 255).all()  # black at 0, white at 1
    assert row[len(row) // 3, 0] >= 250 and row[len(row) // 3, 2] == 0  # red at 1/3


def test_compare_defaults_to_a_model_of_the_same_dataset():
    """Without a link, B is a checkpoint trained on A's dataset, so that reconstructions are compared."""
    at = opened(COMPARE)
    assert at.selectbox(key="other").value == BEST
    assert not at.info  # no "no common test images"
    fashion = opened(COMPARE, ckpt="checkpoints/fashion-2d")
    assert fashion.selectbox(key="other").value == "checkpoints/fashion-best"


def test_compare_kl_charts_share_one_y_scale():
    """Both KL charts end their y-scale at the larger model's largest KL."""
    at = opened(COMPARE)
    charts = [s for s in vega_specs(at) if "KL (nats / image)" in json.dumps(s)]
    assert len(charts) == 2
    domains = [chart["encoding"]["y"]["scale"]["domain"] for chart in charts]
    assert domains[0] == domains[1] and domains[0][0] == 0 and domains[0][1] > 0


def test_the_interpolation_path_has_labelled_ends():
    """The map's path carries an A marker at its first point and a B marker at its last."""
    at = opened(INTERPOLATE)
    spec = plotly_spec(at)
    path, ends = trace(spec, "path"), trace(spec, "path ends")
    assert ends["text"] == ["A", "B"]
    for axis in "xy":
        line = plotly_array(path[axis])
        np.testing.assert_allclose(plotly_array(ends[axis]), [line[0], line[-1]])
