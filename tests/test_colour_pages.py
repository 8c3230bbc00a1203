"""Every page of the app on a tiny colour model (32 x 32 RGB, logistic likelihood, trained on a folder
with broken files), in-process with AppTest: no exception, no error, and colour where it belongs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from explorer import paths
from tests.colour_model import CLASSES, SIDE, colour_env, colour_run  # noqa: F401  (fixtures)
from vae_core import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_umap_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """No numba behind the Atlas page (as in test_ux)."""
    from vae_core import projection as pj

    monkeypatch.setenv("VAE_WARM_UP_UMAP", "0")
    monkeypatch.setattr(pj, "warm_up_umap", lambda: type("Done", (), {"is_alive": lambda self: False})())


def opened(run: Path, page: str, **query: str) -> AppTest:
    """The app at `page` on the colour run, after its first run, without an exception or an error."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params.update({"ckpt": paths.shown(run), **query})
    if page != "app.py":
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def pngs(at: AppTest) -> list[Image.Image]:
    """Every picture the page's main area shows that is a PNG (decoded)."""
    import base64

    out = []
    for element in at.main.image:
        for img in element.proto.imgs:
            if img.url.startswith("data:image/png;base64,"):
                out.append(Image.open(io.BytesIO(base64.b64decode(img.url.split(",", 1)[1]))))
    return out


def test_the_colour_model_is_what_the_helper_promises(colour_run: Path) -> None:  # noqa: F811
    """The run is a 3 x 32 x 32 logistic model whose spec names its folder, trained without the
    broken files, with a timelapse."""
    model = load_checkpoint(colour_run)
    assert model.config.image_shape == (3, SIDE, SIDE) and model.config.likelihood == "logistic"
    assert model.meta.spec.data.binarize == "none" and Path(model.meta.spec.data.folder).is_dir()
    assert sorted((colour_run / "timelapse").glob("epoch_*.npz"))


@pytest.mark.parametrize("page", list(paths.PAGES))
def test_every_page_renders_the_colour_model(colour_run: Path, page: str) -> None:  # noqa: F811
    """Each page (Overview and pages 1-8) runs on the colour model without an exception or error."""
    at = opened(colour_run, page)
    if page not in ("pages/7_Train.py", "pages/6_Encode.py"):  # those two wait for a run, an upload
        assert at.main.image or at.get("plotly_chart"), "the page shows no picture"


def test_pictures_of_decoded_images_are_rgb(colour_run: Path) -> None:  # noqa: F811
    """The Overview's inputs, reconstructions and error maps are RGB PNGs of 12 32-px cells in a row."""
    at = opened(colour_run, "app.py")
    rows = [i for i in pngs(at) if i.size == (12 * (SIDE + 1) + 1, SIDE + 2)]  # 1-px padding
    assert rows and all(i.mode == "RGB" for i in rows)  # the larger PNGs travel as media files
    captions = " ".join(i.proto.imgs[0].caption or "" for i in at.main.image)
    assert "averaged over the colour channels" in captions


def test_the_error_heat_map_averages_the_channels() -> None:
    """error_heat of a colour error map is colorize of its mean over channels; grey maps are kept."""
    from vae_core import explore as ex

    error = np.random.default_rng(0).random((2, 5, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(ex.error_heat(error), ex.colorize(error.mean(-1)))
    np.testing.assert_allclose(ex.error_heat(error[..., 0]), ex.colorize(error[..., 0]))
    assert ex.error_heat(error).shape == (2, 5, 5, 3)


def test_encode_offers_an_upload_only_and_fits_it_to_the_model(colour_run: Path) -> None:  # noqa: F811
    """For a colour model the Encode page has no canvas; an uploaded JPEG is resized and cropped to
    32 x 32 and encoded, with its ELBO, the map and the nearest test images."""
    at = opened(colour_run, "pages/6_Encode.py")
    assert not at.radio, "no draw/upload choice: the canvas is for digit models"
    photo = Image.new("RGB", (120, 80), (250, 240, 200))
    photo.paste((200, 30, 30), (30, 20, 80, 70))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG")
    at.file_uploader(key="upload").upload("photo.jpg", buffer.getvalue(), "image/jpeg").run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    captions = " ".join(i.proto.imgs[0].caption or "" for i in at.main.image)
    assert f"what the model sees ({SIDE} × {SIDE})" in captions
    assert any(m.label == "ELBO (nats / image)" for m in at.metric)
    assert at.get("plotly_chart"), "the map of where it lands"
    assert any(name in captions for name in CLASSES), "the nearest test images, by class"


def test_the_posterior_page_offers_no_canvas_for_a_colour_model(colour_run: Path) -> None:  # noqa: F811
    """The Posterior page's sources are a test image and an upload, no drawing."""
    at = opened(colour_run, "pages/8_Posterior.py")
    assert "draw" not in at.radio(key="post_source").options


def test_the_train_page_shows_the_colour_runs_timelapse(colour_run: Path) -> None:  # noqa: F811
    """The Train page follows the colour run: its timelapse grid is an RGB picture and its map names
    the folder's classes."""
    at = opened(colour_run, "pages/7_Train.py")
    assert at.selectbox(key="t_run").value == "colour"
    grid = next(i for i in at.main.image if "decoded prior quantiles" in (i.proto.imgs[0].caption or ""))
    assert grid is not None
    import json

    maps = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    names = {t.get("name") for spec in maps for t in spec["data"]}
    assert set(CLASSES) <= names


def test_tooltip_images_of_a_colour_model_are_rgb() -> None:
    """data_uris turns decoded colour images (N, H, W, 3) and stored ones (N, 3, H, W) into RGB PNGs
    of their own pixels (the Atlas's hover images and thumbnails)."""
    import base64

    from vae_core import explore as ex
    from vae_core import projection as pj

    stored = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 7), dtype=np.uint8)
    decoded = stored.transpose(0, 2, 3, 1) / 255.0
    for images in (stored, decoded):
        for uri, expected in zip(pj.data_uris(images), stored.transpose(0, 2, 3, 1), strict=True):
            png = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
            assert png.mode == "RGB" and png.size == (7, 5)
            np.testing.assert_array_equal(np.asarray(png), ex.to_pixels(expected))
