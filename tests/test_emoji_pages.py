"""Texts that follow the model rather than assume digits: the likelihood in words, the folder a folder
model needs, the Train form's advice for a folder, and the Compare page's choice of opened models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer import meta, paths, widgets
from vae_core import VAE, DatasetError, DataSpec, RunSpec, VAEConfig, load_checkpoint, save_checkpoint
from vae_core import projection as pj
from vae_core.likelihood import describe

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
EMOJI = "checkpoints/emoji-conv"
needs_emoji = pytest.mark.skipif(
    not (ROOT / EMOJI / "model.pt").is_file(), reason="the shipped checkpoints/emoji-conv is not there"
)


@pytest.fixture(autouse=True)
def _quiet(tmp_path_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No numba behind the Atlas page, and caches in this session's folder."""
    monkeypatch.setattr(pj, "warm_up_umap", lambda: type("Done", (), {"is_alive": lambda self: False})())
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "emoji-cache"))


@pytest.fixture
def lost_folder_model(tmp_path: Path) -> Path:
    """A tiny colour folder model whose spec names a folder of images that does not exist."""
    torch.manual_seed(0)
    config = VAEConfig(
        arch="conv", latent_dim=2, hidden=(4, 8), likelihood="logistic", image_shape=(3, 16, 16)
    )
    data = DataSpec(name="folder", binarize="none", folder=str(tmp_path / "gone"), image_size=16, channels=3)
    folder = tmp_path / "models" / "lost"
    folder.mkdir(parents=True)
    save_checkpoint(
        folder, VAE(config).eval(), spec=RunSpec(data=data, model=config), metrics={}, epoch=1, step=1
    )
    return folder


def shown(markdown: str) -> str:
    """Markdown as the browser shows it: escapes removed, hard line breaks as newlines."""
    return re.sub(r"\\(.)", r"\1", markdown.replace("  \n", "\n"))


def app_at(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params.update(query)
    if page != "app.py":
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_each_likelihood_is_described_in_its_own_words() -> None:
    """Bernoulli talks of logits and a sigmoid, the logistic of 256 levels and its location; an unknown
    name still gets a sentence."""
    assert "Bernoulli" in describe("bernoulli").pixels and "sigmoid" in describe("bernoulli").shown
    logistic = describe("logistic")
    assert "256 levels" in logistic.pixels and "Bernoulli" not in logistic.pixels
    assert "location" in logistic.shown and "sigmoid" not in logistic.shown
    assert describe("laplace").pixels == "a laplace likelihood per pixel"


@needs_emoji
def test_overview_of_the_emoji_model_says_logistic_not_bernoulli() -> None:
    """The Overview's decoder sentence names the discretised logistic, never a Bernoulli, and its card
    names the folder; the input is not called binarised."""
    at = app_at("app.py", ckpt=EMOJI)
    text = " ".join(m.value for m in at.markdown)
    assert "logistic per pixel" in text and "Bernoulli" not in text
    model = load_checkpoint(ROOT / EMOJI)
    assert meta.card(model)["dataset"] == "data/emoji (folder)"
    assert meta.input_caption(model) == "model input x"


def test_a_folder_model_without_its_folder_says_which_and_offers_no_download(
    lost_folder_model: Path, monkeypatch
) -> None:
    """Its page warns that the folder its spec names is missing and to restore it: no IDX files, no
    download button."""
    monkeypatch.setenv("VAE_RUNS_DIR", str(lost_folder_model.parent))  # the picker lists it
    at = app_at("pages/1_Latent_grid.py", ckpt=str(lost_folder_model.resolve()))
    assert at.sidebar.selectbox[0].value == paths.shown(lost_folder_model)
    warning = " ".join(shown(w.value) for w in at.warning)
    assert str(lost_folder_model.parents[1] / "gone") in warning and "Restore" in warning
    assert "IDX" not in warning and "download" not in warning.lower()
    assert not [b for b in at.button if b.label.startswith("Download")]


def test_the_missing_emoji_folder_is_built_by_its_script() -> None:
    """For data/emoji the message gives the command that builds it; for another folder, to restore it."""
    error = DatasetError("data/emoji does not exist")
    assert "`python checkpoints/build_emoji_folder.py data/emoji`" in widgets.missing_folder(
        "data/emoji", error
    )
    other = widgets.missing_folder("/srv/photos", error)
    assert "Restore `/srv/photos`" in other and "build_emoji_folder" not in other


def test_train_form_on_a_folder_without_one_asks_for_it(tmp_path: Path, monkeypatch) -> None:
    """Starting the folder dataset with no data folder is refused with advice to give one, and no
    torchvision download is offered."""
    monkeypatch.setenv("VAE_RUNS_DIR", str(tmp_path / "runs"))
    at = app_at("pages/7_Train.py")
    at.selectbox(key="t_dataset").set_value("folder")
    at.text_input(key="t_name").set_value("folder-run")
    next(b for b in at.button if b.label.startswith("Start training")).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Not started" in e.value for e in at.error)
    assert any("Give the data folder" in i.value for i in at.info)
    assert not [b for b in at.button if b.label.startswith("Download")]
    assert not (tmp_path / "runs" / "folder-run").exists()


@needs_emoji
def test_compare_offers_a_model_opened_by_path(lost_folder_model: Path) -> None:
    """A model opened by server path in this session is one of Compare's choices for B."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params.update({"ckpt": EMOJI})
    name = paths.open_path(str(lost_folder_model))
    at.session_state[widgets.OPENED] = [name]
    at.switch_page("pages/4_Compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert name in at.selectbox(key="other").options
