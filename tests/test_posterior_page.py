"""The Posterior page in-process with AppTest: the 2-D view with the identity, a 32-D model's gaps, an
upload, the Encode page's hand-off and hostile URL values."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.test_encode_page import digit_png

ROOT = Path(__file__).resolve().parent.parent
PAGE = "pages/8_Posterior.py"
TWO_D, BEST = "checkpoints/mnist-2d", "checkpoints/mnist-best"

pytestmark = pytest.mark.skipif(
    not all((ROOT / c / "model.pt").is_file() for c in (TWO_D, BEST)), reason="shipped checkpoints missing"
)


def posterior_page(**query: str) -> AppTest:
    """The Posterior page after one run with these query parameters (few refinement steps: fast)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params.update({"steps": "50", **query})
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> float:
    return float(next(m.value for m in at.metric if m.label == label))


def traces(at: AppTest) -> list[tuple[str, str]]:
    """(type, name) of every trace of every Plotly figure on the page, in order."""
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return [(t.get("type", "scatter"), t.get("name", "")) for f in figures for t in f["data"]]


def test_two_d_model_shows_the_exact_posterior_and_the_identity():
    """On mnist-2d the map has the heat map, q's and q*'s ellipses and the prior, and the identity
    strip's residual is below 1e-3 nats with log p(x) = ELBO + KL to that precision."""
    at = posterior_page(ckpt=TWO_D)
    assert not at.error
    drawn = traces(at)
    kinds, names = {kind for kind, _ in drawn}, {name for _, name in drawn}
    assert {"heatmap", "contour"} <= kinds
    assert {
        "q(z|x), encoder: 1σ",
        "q(z|x), encoder: 2σ",
        "q*(z|x), refined: 1σ",
        "q*(z|x), refined: 2σ",
    } <= names
    assert "prior p(z): 1-3σ" in names
    residual = metric(at, "residual (nats)")
    assert abs(residual) < 1e-3
    log_px, elbo = metric(at, "log p(x) (nats)"), metric(at, "ELBO (nats)")
    assert log_px == pytest.approx(elbo + metric(at, "KL(q ‖ p(z|x)) (nats)"), abs=2e-3)
    assert "quadrature" in " ".join(c.value for c in at.caption)
    captions = " ".join(i.proto.imgs[0].caption for i in at.main.image)
    assert "p(z|x), exact" in captions and "q*(z|x), refined" in captions


def test_32d_model_shows_the_iwae_curve_and_both_gaps():
    """On mnist-best there is no grid; the IWAE curve (log k axis) and both gaps are shown, labelled IWAE."""
    at = posterior_page(ckpt=BEST)
    assert not at.error
    assert "32 latent dimensions" in at.info[0].value
    layouts = [json.loads(c.proto.spec)["layout"] for c in at.get("plotly_chart")]
    assert any(layout["xaxis"].get("type") == "log" for layout in layouts)
    drawn = traces(at)
    assert "heatmap" not in {kind for kind, _ in drawn}
    assert {"IWAE bound, k samples", "log p(x) (IWAE k=5000)"} <= {name for _, name in drawn}
    approximation, amortisation = (
        metric(at, "approximation gap (nats)"),
        metric(at, "amortisation gap (nats)"),
    )
    assert amortisation >= 0
    assert metric(at, "log p(x) (nats / image)") - metric(at, "ELBO (encoder's q)") == pytest.approx(
        approximation + amortisation, abs=2e-3
    )
    assert "IWAE with k = 5000" in " ".join(c.value for c in at.caption)


def test_an_uploaded_picture_is_explained():
    """An uploaded '1' gets its posterior map and a finite identity residual below 1e-3."""
    at = posterior_page(ckpt=TWO_D, post_source="upload")
    at.file_uploader(key="post_upload").upload("one.png", digit_png(), "image/png").run()
    assert not at.exception and not at.error
    assert "what the model sees: one.png" in " ".join(i.proto.imgs[0].caption for i in at.main.image)
    assert abs(metric(at, "residual (nats)")) < 1e-3


def test_the_encode_page_hands_its_picture_over():
    """ "See its posterior" on the Encode page opens this page on the encoded picture."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params.update({"input": "upload", "ckpt": TWO_D, "steps": "50"})
    at.run()
    at.switch_page("pages/6_Encode.py").run()
    at.file_uploader(key="upload").upload("one.png", digit_png(), "image/png").run()
    next(b for b in at.button if b.label == "See its posterior").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Posterior"
    assert at.radio(key="post_source").value == "image from the Encode page"
    assert "what the model sees: one.png" in " ".join(i.proto.imgs[0].caption for i in at.main.image)
    assert abs(metric(at, "residual (nats)")) < 1e-3


def test_hostile_url_values_are_ignored_with_a_notice():
    """Unknown source, non-numeric grid size, out-of-range steps and image number fall back to the
    defaults, each with a toast, and the page still renders."""
    at = posterior_page(ckpt=TWO_D, post_source="<script>", grid_n="nan", steps="-5", post_img_nth="99999999")
    toasts = " ".join(t.value for t in at.toast)
    for key in ("post\\_source", "grid\\_n", "steps", "post\\_img\\_nth"):
        assert key in toasts, (key, toasts)
    assert at.radio(key="post_source").value == "test image"
    assert at.selectbox(key="grid_n").value == 200
    assert at.slider(key="steps").value == 300
    assert abs(metric(at, "residual (nats)")) < 1e-3
