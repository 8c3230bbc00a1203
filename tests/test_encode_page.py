"""The Encode page in-process with AppTest: uploads, broken files, a 3-D model, handing z to other pages."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from explorer import state
from tests.test_app import make_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = "checkpoints/mnist-2d"
PAGE = "pages/6_Encode.py"

pytestmark = pytest.mark.skipif(
    not (ROOT / DEFAULT / "model.pt").is_file(), reason=f"the shipped checkpoint {DEFAULT} is not there yet"
)


def digit_png(*, ink: int = 255, paper: int = 0, fmt: str = "PNG") -> bytes:
    """A 140x140 picture of a '1': a slanted stroke with a short flag, `ink` on `paper`."""
    image = Image.new("L", (140, 140), paper)
    draw = ImageDraw.Draw(image)
    draw.line([(78, 20), (64, 120)], fill=ink, width=10)
    draw.line([(78, 20), (58, 40)], fill=ink, width=10)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def encode_page(**query: str) -> AppTest:
    """The Encode page after one run, in upload mode unless the query says otherwise."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params.update({"input": "upload", **query})
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload(at: AppTest, name: str, data: bytes, mime: str = "image/png") -> AppTest:
    at.file_uploader(key="upload").upload(name, data, mime).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_uploaded_digit_is_encoded_and_scored():
    """A white '1' on black shows the model's input, its reconstruction, the map, the ELBO and its rank."""
    at = upload(encode_page(), "one.png", digit_png())
    assert not at.error
    captions = " ".join(i.proto.imgs[0].caption for i in at.main.image)
    assert "what the model sees" in captions and "reconstruction" in captions
    assert "decodes of z ~ q(z|x)" in captions
    elbo = float(metric(at, "ELBO (nats / image)"))
    assert -1000 < elbo < 0
    assert 0 <= float(metric(at, "test percentile")) <= 100
    assert "test images" in " ".join(c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 1
    assert "binarised" in " ".join(c.value for c in at.caption)  # mnist-2d: trained with binarize="dynamic"
    assert at.session_state["encoded_digit"]["ckpt"] == DEFAULT


def test_dark_ink_on_white_jpeg_lands_near_the_white_on_black_png():
    """The same digit as dark ink on white paper (JPEG) is encoded close to the light-on-dark PNG."""
    at = upload(encode_page(), "one.png", digit_png())
    light = np.array(at.session_state["encoded_digit"]["mu"])
    upload(at, "one.jpg", digit_png(ink=20, paper=235, fmt="JPEG"), "image/jpeg")
    assert not at.error
    dark = np.array(at.session_state["encoded_digit"]["mu"])
    assert np.linalg.norm(light - dark) < 0.5


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("noise.png", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "Not a"),
        ("cut.png", digit_png()[:200], "Could not decode"),
        ("blank.png", digit_png(ink=0), "No ink found"),
    ],
    ids=["random-bytes", "truncated-png", "blank"],
)
def test_unusable_files_are_error_messages(name, data, message):
    """Random bytes, a truncated PNG and a blank picture each give st.error with the ImageError text."""
    at = upload(encode_page(), name, data)
    assert len(at.error) == 1 and message in at.error[0].value
    assert not at.metric and not at.get("plotly_chart")


def test_nothing_drawn_yet_asks_for_a_digit():
    """The drawing mode without a drawing invites one and shows no error."""
    at = encode_page(input="draw")
    assert not at.error
    assert "Draw a digit" in at.info[0].value


def test_send_to_sliders_opens_them_at_the_posterior_mean():
    """The "Send to sliders" button switches to the Sliders page with z set to the digit's posterior mean."""
    at = upload(encode_page(), "one.png", digit_png())
    mu = at.session_state["encoded_digit"]["mu"]
    next(b for b in at.button if b.label == "Send to sliders").click().run()
    assert not at.exception
    assert at.title[0].value == "Sliders"
    np.testing.assert_allclose([at.slider(key=f"zs_{i}").value for i in range(2)], mu, atol=1e-3)


def test_interpolation_endpoint_is_the_encoded_digit():
    """The "Interpolation endpoint B" button opens Interpolate with B set to your digit."""
    at = upload(encode_page(), "one.png", digit_png())
    next(b for b in at.button if b.label == "Interpolation endpoint B").click().run()
    assert not at.exception
    assert at.title[0].value == "Interpolate"
    assert at.radio(key="b").value == state.ENCODED
    assert state.ENCODED not in at.radio(key="a").value


def test_higher_dimensional_model_uses_the_pca_map(tmp_path, monkeypatch):
    """For a 3-D model the digit is drawn on the PCA map of the posterior means."""
    tiny = make_checkpoint(tmp_path / "tiny-3d", 3)
    monkeypatch.setenv("VAE_CHECKPOINT", tiny)
    at = upload(encode_page(ckpt=tiny), "one.png", digit_png())
    assert not at.error
    assert "PC 1" in at.get("plotly_chart")[0].proto.spec
    assert len(at.session_state["encoded_digit"]["mu"]) == 3
