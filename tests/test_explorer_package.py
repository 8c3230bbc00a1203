"""The explorer package's contracts: a light import, pages without torch or caches of their own, one
test-set score cache, one map (one orientation) on every page, and start-up paths checked once."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from tests.test_app import DEFAULT, ROOT, make_checkpoint, plotly_array
from tests.test_encode_page import digit_png
from vae_core import projection as pj

UI_FILES = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]
PACKAGE = sorted((ROOT / "explorer").glob("*.py"))
needs_default = pytest.mark.skipif(
    not (ROOT / DEFAULT / "model.pt").is_file(), reason=f"the shipped checkpoint {DEFAULT} is not there yet"
)


@pytest.fixture
def fresh_caches(tmp_path, monkeypatch):
    """Empty memory caches and an empty disk cache, so that every computation is seen happening; no
    numba compilation behind the Atlas page (as in test_atlas_page)."""
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(pj, "warm_up_umap", lambda: type("Done", (), {"is_alive": lambda self: False})())
    st.cache_data.clear()
    yield
    st.cache_data.clear()


def test_importing_the_package_starts_nothing():
    """Importing every module of `explorer` starts no thread and leaves torch's thread count alone."""
    code = (
        "import threading, torch; torch.set_num_threads(3); before = threading.active_count()\n"
        "import explorer, explorer.paths, explorer.meta, explorer.loaders, explorer.state\n"
        "import explorer.figures, explorer.widgets\n"
        "print(torch.get_num_threads(), threading.active_count() - before)"
    )
    env = {**os.environ, "VAE_WARM_UP_UMAP": "1"}  # the warm-up would start if importing did it
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "0"]


def test_pages_import_no_torch_and_define_no_caches():
    """No page imports torch, and no file but explorer/loaders.py defines a Streamlit cache."""
    for file in UI_FILES:
        assert not re.search(r"^\s*(import|from) torch\b", file.read_text(), re.M), file
    for file in UI_FILES + PACKAGE:
        if file.name != "loaders.py":
            assert "st.cache_" not in file.read_text(), file


def test_checkpoint_metadata_is_read_in_one_module():
    """The stored training configuration and dataset are read only by explorer/meta.py."""
    for file in UI_FILES + PACKAGE:
        if file.name != "meta.py":
            assert not re.search(r"\.meta\.(train_config|dataset)\b", file.read_text()), file


# ---------------------------------------------------------------- one score cache, one map


def page(name: str, **query: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params.update(query)
    at.switch_page(name)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def encoded(ckpt: str) -> AppTest:
    """The Encode page after uploading a '1'."""
    at = page("pages/6_Encode.py", ckpt=ckpt, input="upload")
    at.file_uploader(key="upload").upload("one.png", digit_png(), "image/png").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def plotly_trace(at: AppTest, name: str) -> np.ndarray:
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    trace = next(t for t in spec["data"] if t.get("name") == name)
    return np.stack([plotly_array(trace["x"]), plotly_array(trace["y"])], 1).astype(np.float64)


def atlas_points(at: AppTest) -> np.ndarray:
    """The (N, 2) positions of the Atlas's test-image dots, in index order."""
    chart = at.get("vega_lite_chart")[0].proto
    frames = [convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.datasets]
    dots = next(f for f in frames if {"x", "y", "index", "class"} <= set(f.columns))
    return dots.sort_values("index")[["x", "y"]].to_numpy(np.float64)


@needs_default
def test_the_test_set_is_scored_once_for_every_page(fresh_caches, monkeypatch):
    """The Latent grid, Sliders, Encode and Atlas pages share one scoring of the test set."""
    calls = []
    score_images = pj.score_images
    monkeypatch.setattr(pj, "score_images", lambda *a, **k: calls.append(len(a[1])) or score_images(*a, **k))
    page("pages/1_Latent_grid.py")
    page("pages/2_Sliders.py")
    encoded(DEFAULT)
    page("pages/5_Atlas.py")
    assert calls == [10_000]


@needs_default
def test_a_3d_model_has_one_map_orientation_on_every_page(fresh_caches, tmp_path, monkeypatch):
    """For a 3-D model the Encode, Interpolate and Atlas (PCA) pages draw the test set at the same
    coordinates, and the encoded digit sits where the Atlas's PCA puts its posterior mean."""
    tiny = make_checkpoint(tmp_path / "tiny-3d", 3)
    monkeypatch.setenv("VAE_CHECKPOINT", tiny)
    atlas = atlas_points(page("pages/5_Atlas.py", ckpt=tiny, atlas_method="pca"))
    stored = pj.cached(pj.cache_key(tiny, "test", "pca", seed=0), lambda: pytest.fail("no PCA map on disk"))
    np.testing.assert_allclose(atlas, stored["coords"], atol=1e-5)
    at = encoded(tiny)
    np.testing.assert_allclose(plotly_trace(at, "test images"), atlas[:5000], atol=1e-5)
    mu = np.asarray(at.session_state["encoded_digit"]["mu"], np.float64)
    star = (mu - stored["mean"]) @ stored["components"].T
    np.testing.assert_allclose(plotly_trace(at, "your digit")[0], star, atol=1e-5)
    interpolate = page("pages/3_Interpolate.py", ckpt=tiny)
    np.testing.assert_allclose(plotly_trace(interpolate, "test images"), atlas[:5000], atol=1e-5)


# ---------------------------------------------------------------- start-up paths


def loop(tmp_path: Path) -> str:
    link = tmp_path / "loop"
    link.symlink_to(link)
    return str(link)


@needs_default
@pytest.mark.parametrize("how", ["environment", "argument"])
def test_a_symlink_loop_as_checkpoint_is_a_message(tmp_path, monkeypatch, how):
    """A symlink loop given as $VAE_CHECKPOINT or --checkpoint is named in a warning; the app opens
    the default checkpoint instead of showing a traceback."""
    if how == "environment":
        monkeypatch.setenv("VAE_CHECKPOINT", loop(tmp_path))
    else:
        monkeypatch.setattr("sys.argv", ["app.py", "--checkpoint", loop(tmp_path)])
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    warning = " ".join(w.value for w in at.sidebar.warning)
    assert "symlink loop" in warning and ("VAE\\_CHECKPOINT" in warning or "\\-\\-checkpoint" in warning)
    assert at.sidebar.selectbox(key="_ckpt_widget").value == DEFAULT


@needs_default
def test_a_missing_data_dir_is_a_message(tmp_path, monkeypatch):
    """--data-dir naming no folder is said so once in the sidebar, and the pages still render."""
    monkeypatch.setattr("sys.argv", ["app.py", "--data-dir", str(tmp_path / "nowhere")])
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "it is ignored" in " ".join(w.value for w in at.sidebar.warning)
