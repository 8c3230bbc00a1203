"""Opening a model in the app: by server path or by an uploaded zip of an ONNX folder, checked first;
and ONNX weights holding NaN or inf refused by the loader's checks."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from streamlit.testing.v1 import AppTest

from tests.test_train_page import shown
from vae_core import CheckpointError, VAEConfig, load_checkpoint
from vae_core import onnx_model as om
from vae_core.checkpoint import save_checkpoint
from vae_core.model import VAE
from vae_core.spec import DataSpec, RunSpec

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PICKER = "_ckpt_widget"

pytestmark = pytest.mark.skipif(
    not (ROOT / "checkpoints/mnist-2d/model.pt").is_file(),
    reason="the shipped checkpoint mnist-2d is not there",
)


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 2-D MNIST model of ours, exported as an ONNX folder outside the project."""
    torch.manual_seed(0)
    config = VAEConfig(latent_dim=2, hidden=(16,))
    root = tmp_path_factory.mktemp("tiny")
    save_checkpoint(root / "ckpt", VAE(config), spec=RunSpec(data=DataSpec(), model=config), metrics={},
                    epoch=1, step=1)  # fmt: skip
    return om.export_onnx(
        load_checkpoint(root / "ckpt"), root / "tiny-onnx", name="tiny", description="a test"
    )


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty runs folder and a private cache for the app."""
    monkeypatch.setenv("VAE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VAE_WARM_UP_UMAP", "0")
    return tmp_path / "runs"


def zipped(folder: Path, top: str = "", **replace: bytes) -> bytes:
    """The folder's files as a zip (inside the folder `top` if given), some contents replaced."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for file in sorted(folder.iterdir()):
            z.writestr(f"{top}/{file.name}" if top else file.name, replace.get(file.name, file.read_bytes()))
    return buffer.getvalue()


def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload(at: AppTest, data: bytes, name: str = "model.zip") -> AppTest:
    at.sidebar.file_uploader(key="open_zip").set_value((name, data, "application/zip"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at: AppTest) -> list[str]:
    return [shown(e.value) for e in at.error]


def left_in(runs: Path) -> list[str]:
    """Everything under the runs folder, as relative paths."""
    return sorted(p.relative_to(runs).as_posix() for p in runs.rglob("*")) if runs.exists() else []


# ---------------------------------------------------------------- an uploaded zip


@pytest.mark.parametrize("top", ["", "tiny-onnx"])
def test_an_uploaded_zip_opens_and_the_pages_render_it(onnx_folder: Path, runs: Path, top: str) -> None:
    """A zip of the three files (at its top or in one folder) is unpacked under runs/imported, selected,
    listed by the picker, and the Sliders and Latent grid pages render it."""
    at = upload(app(), zipped(onnx_folder, top), "tiny model.zip")
    assert not at.error, errors(at)
    chosen = at.sidebar.selectbox(key=PICKER).value
    folder = Path(chosen)
    assert folder.parent == runs / "imported" and folder.name.startswith("tiny-model-")
    assert sorted(p.name for p in folder.iterdir()) == sorted(om.FILES)
    assert chosen in at.sidebar.selectbox(key=PICKER).options
    for page in ("pages/2_Sliders.py", "pages/1_Latent_grid.py"):
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, errors(at)
        assert at.sidebar.selectbox(key=PICKER).value == chosen
        assert at.image or at.get("plotly_chart"), f"{page} shows no picture"
    fresh = app()  # another session: the model lives in the runs folder, so the picker lists it
    assert chosen in fresh.sidebar.selectbox(key=PICKER).options


def _truncated(folder: Path) -> dict[str, bytes]:
    data = (folder / om.ENCODER_FILE).read_bytes()
    return {om.ENCODER_FILE: data[: len(data) // 2]}


def _wrong_shapes(folder: Path) -> dict[str, bytes]:
    manifest = json.loads((folder / om.MANIFEST_FILE).read_text())
    return {om.MANIFEST_FILE: json.dumps({**manifest, "latent_dim": 5}).encode()}


def _traversal_zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for file in folder.iterdir():
            z.writestr(file.name, file.read_bytes())
        z.writestr("../../escaped.txt", b"outside")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_traversal_zip, ("'..'",)),
        (lambda folder: zipped(folder, **_truncated(folder)), ("encoder.onnx", "truncated")),
        (lambda folder: zipped(folder, **_wrong_shapes(folder)), ("mu", "(N, 2)", "(N, 5)")),
        (lambda folder: b"PK\x03\x04 not really a zip", ("not a readable zip",)),
    ],
    ids=["dot-dot-entry", "truncated-encoder", "wrong-shapes", "not-a-zip"],
)
def test_a_hostile_zip_gives_one_message_and_leaves_nothing(
    onnx_folder: Path, runs: Path, tmp_path: Path, make, words: tuple[str, ...]
) -> None:
    """A zip with a '../' entry, a truncated encoder.onnx or shapes that disagree with the manifest:
    one message saying why, the app still up on its model, nothing left in the runs folder."""
    at = app()
    before = at.sidebar.selectbox(key=PICKER).value
    at = upload(at, make(onnx_folder))
    [message] = errors(at)
    assert message.startswith("Cannot open model.zip:")
    for word in words:
        assert word in message, message
    assert at.sidebar.selectbox(key=PICKER).value == before
    assert not [p for p in left_in(runs) if p != "imported"], left_in(runs)
    assert not (tmp_path / "escaped.txt").exists() and not (runs.parent / "escaped.txt").exists()
    at.switch_page("pages/2_Sliders.py").run()  # the app goes on
    assert not at.exception and not at.error


def test_the_same_zip_twice_is_one_folder(onnx_folder: Path, runs: Path) -> None:
    """Uploading the same bytes again reuses the folder unpacked the first time."""
    from explorer import paths

    first = paths.open_model_zip(zipped(onnx_folder), "m.zip")
    assert paths.open_model_zip(zipped(onnx_folder), "m.zip") == first
    assert len(list((runs / "imported").iterdir())) == 1


def test_a_zip_with_other_files_is_refused(onnx_folder: Path, runs: Path) -> None:
    """A zip holding a graph file beyond the model's own is refused, and removed."""
    from explorer import paths
    from vae_core.archive import ArchiveError

    buffer = io.BytesIO(zipped(onnx_folder))
    with zipfile.ZipFile(buffer, "a") as z:
        z.writestr("extra.onnx", b"x")
    with pytest.raises(ArchiveError, match=r"extra\.onnx"):
        paths.open_model_zip(buffer.getvalue(), "m.zip")
    assert list((runs / "imported").iterdir()) == []


# ---------------------------------------------------------------- a server path


def test_a_server_path_opens_and_is_selected(onnx_folder: Path, runs: Path) -> None:
    """A path to an ONNX folder outside the project is checked, listed by the picker and selected."""
    at = app()
    at.sidebar.text_input(key="open_path").set_value(str(onnx_folder)).run()
    assert not at.exception and not at.error, errors(at)
    assert at.sidebar.selectbox(key=PICKER).value == str(onnx_folder)
    assert any("Opened" in shown(s.value) for s in at.success)
    at.switch_page("pages/2_Sliders.py").run()  # it stays for the session
    assert at.sidebar.selectbox(key=PICKER).value == str(onnx_folder)
    assert str(onnx_folder) in at.sidebar.selectbox(key=PICKER).options


@pytest.mark.parametrize(
    ("wanted", "words"),
    [("no/such/folder", ("cannot be opened",)), ("", ("holds no model.pt", "ONNX model folder"))],
)
def test_a_bad_server_path_gives_one_message(
    runs: Path, tmp_path: Path, wanted: str, words: tuple[str, ...]
) -> None:
    """A missing path, or a folder holding no model, gives one message; the app keeps its model."""
    wanted = str(tmp_path / wanted)
    at = app()
    before = at.sidebar.selectbox(key=PICKER).value
    at.sidebar.text_input(key="open_path").set_value(wanted).run()
    assert not at.exception
    [message] = errors(at)
    for word in words:
        assert word in message, message
    assert at.sidebar.selectbox(key=PICKER).value == before


def test_a_path_that_does_not_load_is_not_listed(onnx_folder: Path, runs: Path, tmp_path: Path) -> None:
    """An ONNX folder whose graphs are refused gives the check's message and is not added to the picker."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, data in {
        **{f.name: f.read_bytes() for f in onnx_folder.iterdir()},
        **_truncated(onnx_folder),
    }.items():
        (bad / name).write_bytes(data)
    at = app()
    at.sidebar.text_input(key="open_path").set_value(str(bad)).run()
    assert not at.exception
    [message] = errors(at)
    assert "truncated" in message
    assert str(bad) not in at.sidebar.selectbox(key=PICKER).options


# ---------------------------------------------------------------- non-finite weights


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused(onnx_folder: Path, tmp_path: Path, value: float) -> None:
    """A decoder weight holding NaN or inf is refused with a message naming the tensor."""
    folder = tmp_path / "poisoned"
    folder.mkdir()
    for file in onnx_folder.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    proto = onnx.load(folder / om.DECODER_FILE, load_external_data=False)
    tensor = next(t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and t.dims)
    weights = numpy_helper.to_array(tensor).copy()
    weights.flat[0] = value
    tensor.CopyFrom(numpy_helper.from_array(weights, tensor.name))
    (folder / om.DECODER_FILE).write_bytes(proto.SerializeToString())
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(folder)
    assert tensor.name in str(caught.value) and "1 NaN or infinite" in str(caught.value)


def test_finite_weights_pass(onnx_folder: Path) -> None:
    """Our exporter's weights are all finite: the check lets the model load."""
    assert isinstance(load_checkpoint(onnx_folder), om.OnnxVAE)
