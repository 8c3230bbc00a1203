"""The Train page's folder dataset: a server path or an uploaded zip of images becomes the run's data
folder, imported here with a progress bar and a report, under the runs folder's uploads/."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.test_cli import colour_folder
from tests.test_train_page import errors, shown
from vae_core import jobs

ROOT = Path(__file__).resolve().parent.parent
APP, PAGE = str(ROOT / "app.py"), "pages/7_Train.py"
IMAGES = 36  # colour_folder's two classes of 18


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty runs folder and cache; a started run's trainer is a process that exits at once."""
    monkeypatch.setenv("VAE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VAE_WARM_UP_UMAP", "0")
    trainers: list[subprocess.Popen] = []

    def launch(folder: Path, flags: list[str]) -> tuple[int, list[str]]:
        trainers.append(subprocess.Popen(["true"]))
        return trainers[-1].pid, ["true", *flags]

    monkeypatch.setattr(jobs, "_launch", launch)
    yield tmp_path / "runs"
    for trainer in trainers:
        trainer.wait()


def zip_of(folder: Path, top: str = "pictures") -> bytes:
    """The folder's files zipped inside `top`/, with a text file and macOS's junk beside the images."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for file in sorted(folder.rglob("*.png")):
            z.writestr(f"{top}/{file.relative_to(folder).as_posix()}", file.read_bytes())
        z.writestr(f"{top}/README.txt", b"not an image")
        z.writestr(f"__MACOSX/{top}/._red", b"resource fork")
    return buffer.getvalue()


def start(at: AppTest, name: str, *, data_dir: str = "", upload: bytes | None = None) -> AppTest:
    """Fill the form for a small folder run and press Start training."""
    at.selectbox(key="t_dataset").set_value("folder")
    at.number_input(key="t_image_size").set_value(16)
    at.text_input(key="t_name").set_value(name)
    at.text_input(key="t_data_dir").set_value(data_dir)
    if upload is not None:
        at.file_uploader(key="t_data_zip").set_value(("my pictures.zip", upload, "application/zip"))
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def job_spec(runs: Path, name: str) -> dict:
    return json.loads((runs / name / "job.json").read_text())["spec"]


def report(at: AppTest) -> str:
    return " | ".join(e.label for e in at.expander if e.label.startswith("import report"))


def test_an_uploaded_zip_of_images_starts_a_run_on_it(runs: Path, tmp_path: Path) -> None:
    """A zip of a colour folder is unpacked under runs/uploads (images only), imported with a report,
    and the run's spec and --data-dir name that folder."""
    at = start(page(), "zipped", upload=zip_of(colour_folder(tmp_path / "pictures")))
    assert not at.error, errors(at)
    folder = Path(job_spec(runs, "zipped")["data"]["folder"])
    assert folder.parent == runs / "uploads" and folder.name.startswith("my-pictures-")
    assert sorted(p.name for p in folder.iterdir()) == ["blue", "red"]  # the top folder dropped
    assert len(list(folder.rglob("*.png"))) == IMAGES and not list(folder.rglob("*.txt"))
    assert any("Skipped 2 entries" in shown(i.value) for i in at.info)
    assert f"Imported {IMAGES} of {IMAGES} images" in report(at)
    assert json.loads((runs / "zipped" / "job.json").read_text())["runtime"]["data_dir"] == str(folder)


def test_a_server_path_starts_a_run_with_its_import_report(runs: Path, tmp_path: Path) -> None:
    """A folder typed as a server path is imported once here (report shown) and becomes the run's data."""
    pictures = colour_folder(tmp_path / "pictures")
    at = start(page(), "typed", data_dir=str(pictures))
    assert not at.error, errors(at)
    assert job_spec(runs, "typed")["data"]["folder"] == str(pictures.resolve())
    assert f"Imported {IMAGES} of {IMAGES} images" in report(at)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1  # the trainer finds this cache


@pytest.mark.parametrize(
    ("upload", "data_dir", "message"),
    [
        (b"PK\x03\x04 cut short", "", "not a readable zip"),
        ("traversal", "", "'..'"),
        ("text only", "", "holds no images"),
        ("good", "/some/folder", "not both"),
    ],
)
def test_a_bad_upload_starts_nothing(runs: Path, tmp_path: Path, upload, data_dir: str, message: str) -> None:
    """A damaged zip, a '../' entry, a zip without images, or a zip and a path: one message, no run,
    nothing left under uploads/."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        if upload == "traversal":
            z.writestr("../evil.png", b"x")
        z.writestr("notes.txt", b"x")
        if upload == "good":
            z.writestr("a.png", b"x")
    data = upload if isinstance(upload, bytes) else buffer.getvalue()
    at = start(page(), "refused", data_dir=data_dir, upload=data)
    assert message in errors(at)
    assert len(at.error) == 1
    assert not (runs / "refused").exists()
    uploads = runs / "uploads"
    assert not uploads.exists() or not list(uploads.iterdir())


def test_an_empty_folder_is_said_before_a_run_starts(runs: Path, tmp_path: Path) -> None:
    """A folder holding no images is refused by its import, with the import's message; no run starts."""
    (tmp_path / "empty").mkdir()
    at = start(page(), "empty-run", data_dir=str(tmp_path / "empty"))
    assert "empty holds no image files to import" in errors(at)
    assert not (runs / "empty-run").exists()
