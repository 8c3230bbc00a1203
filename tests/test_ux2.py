"""Issue 21, points 4, 6, 7, 8 and escaped messages: t-SNE in the background with progress and cancel,
data checked before a run starts, the Sliders page at 32 dimensions, training further, evaluating and
deleting runs, and user text shown as itself."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from tests.test_cli import idx_folder
from tests.test_jobs import fake_run
from vae_core import VAE, RunSpec, VAEConfig, jobs, load_checkpoint, load_images, save_checkpoint
from vae_core import projection as pj
from vae_core.data import available, locate
from vae_core.jobs import RunError
from vae_core.records import Outcome

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
needs_mnist = pytest.mark.skipif(locate("mnist", "test") is None, reason="needs the MNIST test set")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Scores and maps in a folder of this test session, not the project's."""
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ux2-cache"))


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VAE_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


def open_page(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(query)
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown(markdown: str) -> str:
    """Markdown as the browser shows it: escapes removed, hard line breaks as newlines."""
    return re.sub(r"\\(.)", r"\1", markdown.replace("  \n", "\n"))


def messages(elements) -> str:
    return " | ".join(shown(e.value) for e in elements)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label.startswith(label))


def checkpoint(folder: Path, latent_dim: int, *, inactive: int = 0, epoch: int = 1, epochs: int = 3) -> Path:
    """An untrained MNIST checkpoint whose stored KL marks its last `inactive` dimensions inactive."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=latent_dim, hidden=(32,)))
    kl = [float(latent_dim - i) for i in range(latent_dim - inactive)] + [0.0] * inactive
    spec = RunSpec.from_values(
        {"model": {"latent_dim": latent_dim, "hidden": (32,)}, "train": {"epochs": epochs}}
    )
    metrics = {"elbo": -500.0, "recon": 490.0, "kl": sum(kl), "kl_per_dim": kl}
    save_checkpoint(folder, model, spec=spec, metrics=metrics, epoch=epoch, step=10 * epoch)
    return folder


# ---------------------------------------------------------------- escaped messages


@pytest.mark.parametrize("text", ["C:\\runs\\new", "a `b` *c* _d_ [e](f) <g> $h$ :red[i]", "two\nlines"])
def test_plain_shows_user_text_as_itself(text: str) -> None:
    """widgets.plain escapes every Markdown character, so the shown text is the text itself."""
    from explorer import widgets

    escaped = widgets.plain(text)
    assert shown(escaped) == text
    assert not re.search(r"(?<!\\)[`*_\[\]$<>]", escaped)  # nothing left for Markdown to read


def test_a_run_name_with_backslashes_and_backticks_is_shown_as_typed(runs: Path) -> None:
    """The refusal of a name or a data folder with backslashes and backticks quotes them as typed."""
    at = open_page("pages/7_Train.py")
    at.text_input(key="t_name").set_value("a\\b`c`")
    button(at, "Start training").click().run()
    assert "The run name 'a\\\\b`c`' may not contain" in messages(at.error)
    at.text_input(key="t_name").set_value("ok")
    at.text_input(key="t_data_dir").set_value("/no/such/fol\\der`x`")
    button(at, "Start training").click().run()
    assert "The data folder /no/such/fol\\der`x` does not exist" in messages(at.error)
    assert all("`" not in e.value.replace("\\`", "") for e in at.error)  # no code span was made


# ---------------------------------------------------------------- point 6: data before Start


def test_available_checks_local_files_only(tmp_path: Path) -> None:
    """A folder with both splits is available; an empty one is not, with a message naming the split,
    the folder searched and how to provide it; unknown names are refused."""
    assert available("mnist", idx_folder(tmp_path / "idx")) == (True, "")
    (tmp_path / "empty").mkdir()
    ok, message = available("kmnist", tmp_path / "empty")
    assert not ok and "kmnist train split is not in" in message and str(tmp_path / "empty") in message
    assert "--data-dir DIR" in message and "\n" in message
    assert available("cifar", None)[0] is False and "Unknown dataset 'cifar'" in available("cifar")[1]


def test_train_form_marks_missing_datasets_and_refuses_to_start(runs: Path, tmp_path, monkeypatch) -> None:
    """With no KMNIST files the form offers "kmnist (not downloaded)"; Start shows the whole message
    (every line) and a download button, and creates no run."""
    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path / "data"))
    idx_folder(tmp_path / "data")
    (tmp_path / "data" / "mnist").mkdir()
    for file in (tmp_path / "data").glob("*.gz"):
        file.rename(tmp_path / "data" / "mnist" / file.name)
    at = open_page("pages/7_Train.py")
    dataset = at.selectbox(key="t_dataset")  # five datasets: a select box (a radio holds up to three)
    assert (
        dataset.format_func("kmnist") == "kmnist (not downloaded)" and dataset.format_func("mnist") == "mnist"
    )
    dataset.set_value("kmnist")
    at.text_input(key="t_name").set_value("kmnist-run")
    button(at, "Start training").click().run()
    _, message = available("kmnist")
    assert f"Not started: {message}" in messages(at.error)
    assert any(b.label.startswith("Download kmnist now") for b in at.button)
    assert not (runs / "kmnist-run").exists()


# ---------------------------------------------------------------- point 8: train further, evaluate, delete


def finished_run(runs: Path, name: str, data: Path | None = None) -> Path:
    """A run that finished its 3 epochs, with a checkpoint and a training state, trained on `data`."""
    folder = fake_run(runs, name, outcome=Outcome("finished", "Finished at epoch 3, step 30.", 3, 30))
    checkpoint(folder, 2, epoch=3)
    (folder / "train_state.pt").write_bytes(b"")
    job = json.loads((folder / "job.json").read_text())
    job["spec"] = RunSpec.from_values({"model": {"hidden": (32,)}, "train": {"epochs": 3}}).to_dict()
    job["runtime"] = {"data_dir": str(data) if data else None, "device": "cpu", "threads": 1}
    (folder / "job.json").write_text(json.dumps(job))
    return folder


def test_a_finished_run_trains_further_only_past_its_epoch(runs: Path) -> None:
    """A finished run offers to train to a higher epoch (default +10, never its own), and the library
    refuses a resume to the epoch it has reached."""
    folder = finished_run(runs, "done")
    at = open_page("pages/7_Train.py")
    total = at.number_input(key="t_total_done_3")
    assert (total.value, total.min) == (13, 4)
    assert button(at, "Train further to epoch 13") and not any(
        b.label.startswith("Resume") for b in at.button
    )
    with pytest.raises(RunError, match="has finished its 3 epochs"):
        jobs.resume_run(jobs.read_run(folder), epochs=3)


def test_delete_asks_first_and_removes_only_that_run(runs: Path) -> None:
    """Delete asks for a confirmation; Keep it keeps the run, Delete removes its folder and only it."""
    folder, other = finished_run(runs, "old"), finished_run(runs, "other")
    at = open_page("pages/7_Train.py")
    at.selectbox(key="t_run").set_value("old").run()
    button(at, "Delete run").click().run()
    assert "Delete " in messages(at.warning) and str(folder) in messages(at.warning)
    button(at, "Keep it").click().run()
    assert folder.is_dir()
    button(at, "Delete run").click().run()
    button(at, "Delete").click().run()
    assert not at.exception and not folder.exists() and other.is_dir()
    assert at.selectbox(key="t_run").options == ["other"]


def test_delete_run_refuses_anything_but_an_idle_run_folder_in_the_runs_folder(tmp_path: Path) -> None:
    """delete_run refuses a folder outside the runs folder, a symlink to one, a deeper folder and a
    running run, deleting nothing; it deletes an ended run's folder."""
    root, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    outside = fake_run(elsewhere, "outside", outcome=Outcome("finished", "Finished."))
    (root).mkdir()
    (root / "link").symlink_to(outside)
    deeper = fake_run(root / "nest", "deeper", outcome=Outcome("finished", "Finished."))
    for folder in (outside, root / "link", deeper):
        with pytest.raises(RunError, match="is not a run folder inside"):
            jobs.delete_run(jobs.read_run(folder), root)
    assert (outside / "job.json").is_file() and (deeper / "job.json").is_file()
    busy = fake_run(root, "busy", outcome=None)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        job = json.loads((busy / "job.json").read_text()) | {"pid": sleeper.pid}
        (busy / "job.json").write_text(json.dumps(job))
        with pytest.raises(RunError, match="busy is still training"):
            jobs.delete_run(jobs.read_run(busy), root)
        assert busy.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    done = fake_run(root, "done", outcome=Outcome("finished", "Finished."))
    jobs.delete_run(jobs.read_run(done), root)
    assert not done.exists() and outside.is_dir()


def test_evaluate_measures_the_nll_in_its_own_process_and_shows_it(runs: Path, tmp_path: Path) -> None:
    """Evaluate starts `python -m vae_core evaluate RUN --write --k K` as an argument list; while it
    runs the run cannot be deleted or resumed; once it ends the page shows the test NLL with its k."""
    folder = finished_run(runs, "measured", idx_folder(tmp_path / "idx"))
    at = open_page("pages/7_Train.py")
    at.number_input(key="t_k_measured").set_value(3).run()
    button(at, "Evaluate (NLL, k = 3)").click().run()
    evaluation = jobs.evaluation(jobs.read_run(folder))
    command = json.loads((folder / "evaluate.json").read_text())["command"]
    flags = ["--write", "--k", "3", "--device", "cpu", "--data-dir", str(tmp_path / "idx")]
    assert command[1:] == ["-m", "vae_core", "evaluate", str(folder), *flags]
    if evaluation.running:
        with pytest.raises(RunError, match="being evaluated"):
            jobs.delete_run(jobs.read_run(folder))
    deadline = time.monotonic() + 120
    while jobs.evaluation(jobs.read_run(folder)).running:
        assert time.monotonic() < deadline, (folder / "evaluate.log").read_text()
        time.sleep(0.5)
    at.run()
    assert not at.exception and not at.error, messages(at.error)
    nll = next(m for m in at.metric if m.label == "test NLL (nats / image)")
    metrics = jobs.saved(jobs.read_run(folder))[1]
    assert nll.value == f"{metrics['nll']:.2f}" and metrics["nll_k"] == 3


# ---------------------------------------------------------------- point 7: Sliders at 32 dimensions


@needs_mnist
def test_sliders_at_32_dimensions(tmp_path: Path, monkeypatch) -> None:
    """Every dimension of a 32-D model has a slider spanning its test-set posterior means' 0.5%-99.5%
    quantiles widened by a tenth, the 8 inactive ones in an expander; the image column is sticky and
    the z text wraps."""
    folder = checkpoint(tmp_path / "wide-32d", 32, inactive=8)
    monkeypatch.setenv("VAE_CHECKPOINT", str(folder))
    at = open_page("pages/2_Sliders.py", ckpt=str(folder))
    assert not at.error
    assert sorted(s.key for s in at.slider) == sorted(f"zs_{i}" for i in range(32))
    assert sorted(s.key for s in at.expander[0].slider) == sorted(f"zs_{i}" for i in range(24, 32))
    test = load_images("mnist", "test", download=False)
    model = load_checkpoint(folder)
    mu = pj.score_images(model, test.images.numpy(), model.meta.spec.data.binarize)["mu"]
    for i in (0, 5, 23):
        lo, hi = np.quantile(mu[:, i].astype(np.float64), [0.005, 0.995])
        slider = at.slider(key=f"zs_{i}")
        assert slider.min == pytest.approx(lo - 0.1 * (hi - lo), abs=0.006)
        assert slider.max == pytest.approx(hi + 0.1 * (hi - lo), abs=0.006)
    assert any("position: sticky" in h.proto.body for h in at.get("html"))
    z_text = next(c for c in at.code if c.value.startswith("z = ["))
    assert z_text.proto.wrap_lines


# ---------------------------------------------------------------- point 4: t-SNE in the background


def test_map_job_reports_progress_and_stops_when_cancelled(tmp_path, monkeypatch) -> None:
    """A map job writes its arrays to the disk cache and says done; a cancelled one stops at its next
    report, says cancelled and writes nothing."""
    from explorer.loaders import JobState, MapJob

    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path))

    def fit(progress):
        seen.append(progress(0.5))
        return pj.project(np.eye(5, dtype=np.float32), "pca").arrays()

    seen: list = []
    done = MapJob("done-key")
    done.run(fit)
    assert (
        done.state is JobState.DONE and done.fraction == 0.5 and seen == [False] and pj.is_cached("done-key")
    )
    stopped = MapJob("stopped-key")
    stopped.cancel()
    stopped.run(lambda progress: pj.project(np.random.default_rng(0).normal(size=(60, 4)), "tsne",
                                            perplexity=5, progress=progress).arrays())  # fmt: skip
    assert stopped.state is JobState.CANCELLED and not pj.is_cached("stopped-key")


@needs_mnist
def test_atlas_shows_pca_and_progress_while_tsne_computes_and_cancels(tmp_path, monkeypatch) -> None:
    """Choosing t-SNE shows the PCA map at once with a progress bar and Cancel; Cancel stops the
    background fit, after which the page offers to compute it again."""
    folder = checkpoint(tmp_path / "tsne-3d", 3)
    monkeypatch.setenv("VAE_CHECKPOINT", str(folder))
    at = open_page("pages/5_Atlas.py", ckpt=str(folder), atlas_method="tsne")
    assert not at.error, messages(at.error)
    assert at.get("progress") and "Computing the t-SNE map" in at.get("progress")[0].proto.text
    assert any("projected by PCA" in c.value for c in at.caption)
    assert at.toggle(key="atlas_train")  # training images may be placed on a t-SNE map too
    button(at, "Cancel").click().run()
    deadline = time.monotonic() + 180
    while not any("was cancelled" in w.value for w in at.warning):
        assert time.monotonic() < deadline, "the t-SNE job did not stop"
        time.sleep(1)
        at.run()
    assert button(at, "Compute the t-SNE map again")
    assert not at.exception
