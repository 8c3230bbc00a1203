"""The Train page in-process with AppTest: the form's validation, the job limit, and how runs are shown."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from tests.conftest import synthetic_images
from tests.test_jobs import epoch_record, fake_run, records_text, step_record
from vae_core import VAE, VAEConfig, eval_inputs, timelapse
from vae_core.records import Outcome

ROOT = Path(__file__).resolve().parent.parent
APP, PAGE = str(ROOT / "app.py"), "pages/7_Train.py"


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty runs folder that the page uses instead of runs/."""
    monkeypatch.setenv("VAE_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


def page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def submit(at: AppTest, **values: object) -> AppTest:
    """Fill the form's widgets (by key, without the t_ prefix) and press Start training."""
    for key, value in values.items():
        widget = at.text_input if isinstance(value, str) else at.number_input
        widget(key=f"t_{key}").set_value(value)
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown(markdown: str) -> str:
    """Markdown as the browser shows it: escapes removed, hard line breaks as newlines."""
    return re.sub(r"\\(.)", r"\1", markdown.replace("  \n", "\n"))


def errors(at: AppTest) -> str:
    """The error boxes' text as shown."""
    return " | ".join(shown(e.value) for e in at.error)


def test_page_renders_without_runs(runs: Path) -> None:
    """With no runs the page shows the form and says where runs will go."""
    at = page()
    assert at.title[0].value == "Train"
    assert any("No runs yet" in i.value for i in at.info)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"name": ""}, "Give the run a name"),
        ({"name": "../escape"}, "may not contain"),
        ({"name": "a/b"}, "may not contain"),
        ({"name": "taken"}, "already exists"),
        ({"name": "ok", "hidden": "400 x"}, "positive whole numbers"),
        ({"name": "ok", "data_dir": "/no/such/folder"}, "does not exist"),
    ],
)
def test_form_refuses_bad_values_with_a_message(runs: Path, values: dict, message: str) -> None:
    """Empty, unsafe or taken names, bad hidden sizes, a missing data folder: refused, nothing starts."""
    (runs / "taken").mkdir(parents=True)
    at = submit(page(), **values)
    assert message in errors(at)
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ["taken"]


def test_second_start_is_refused_while_one_trains(runs: Path) -> None:
    """While a run trains, starting another names it; the running run offers Stop, which ends it."""
    folder = fake_run(runs, "busy", outcome=None)
    sleeper = subprocess.Popen(["/bin/sh", "-c", "sleep 60", str(folder)])  # a stand-in trainer
    try:
        job = json.loads((folder / "job.json").read_text()) | {"pid": sleeper.pid, "started": 2.0}
        (folder / "job.json").write_text(json.dumps(job))
        (folder / "trainer.pid").write_text(str(sleeper.pid))
        at = submit(page(), name="second")
        assert "busy is still training" in errors(at)
        assert not (runs / "second").exists()
        assert any("running" in m.value for m in at.markdown)
        next(b for b in at.button if b.label.startswith("Stop")).click()
        at.run()
        assert sleeper.wait(timeout=10) != 0  # SIGTERM reached it
    finally:
        sleeper.kill()
        sleeper.wait()


def test_failed_run_shows_its_message_and_log(runs: Path) -> None:
    """A failed run shows the trainer's error message and the last lines of its log."""
    log = "$ python -m vae_core train ...\nerror: The mnist train split was not found\n"
    fake_run(runs, "broken", outcome=Outcome("failed", "The mnist train split was not found"), log=log)
    at = page()
    assert "broken failed: The mnist train split was not found" in errors(at)
    assert any("error: The mnist train split" in c.value for c in at.code)


def test_finished_run_shows_curves_and_timelapse(runs: Path) -> None:
    """A finished run shows its metrics, its curves and the latent timelapse of its last epoch."""
    metrics = records_text(step_record(20), epoch_record(40))  # test ELBO -180
    folder = fake_run(
        runs, "done", outcome=Outcome("finished", "Finished at epoch 1, step 40.", 1, 40), metrics=metrics
    )
    test = synthetic_images(30, split="test")
    model = VAE(VAEConfig(latent_dim=2, hidden=(8,))).eval()
    with torch.no_grad():
        timelapse.snapshot(model, eval_inputs(test, "none"), test.labels, folder, 1)
    at = page()
    assert not at.error
    assert {m.label: m.value for m in at.metric}["test ELBO (nats / image)"] == "-180.00"
    assert len(at.get("plotly_chart")) == 2  # the curves and the timelapse map
    assert any("epoch 1" in c.value for c in at.caption)
    assert len(at.image) == 1
