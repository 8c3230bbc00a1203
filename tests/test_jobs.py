"""The job manager: names, options, a tiny run in its own process, stop, resume, failures, statuses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.test_cli import idx_folder
from vae_core import jobs, list_checkpoints, load_checkpoint
from vae_core.jobs import RunError, RunOptions, Status
from vae_core.timelapse import load_timelapse


def tiny_options(data: Path, **overrides) -> RunOptions:
    """A run on the synthetic 256-image set: 16 steps per epoch, a step record at step 20."""
    return RunOptions(**{"hidden": (16,), "latent_dim": 2, "epochs": 2, "batch_size": 16,
                         "data_dir": str(data), "device": "cpu", **overrides})  # fmt: skip


def wait_until(condition, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return result


def finished(run: jobs.Run) -> jobs.Run:
    return wait_until(lambda: (r := jobs.read_run(run.path)).status is not Status.RUNNING and r)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return idx_folder(tmp_path_factory.mktemp("idx") / "data")


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "Give the run a name"), ("  ", "Give the run a name"), ("a/b", "may not contain"),
     ("..", "may not contain"), ("x..y", "may not contain"), ("a\\b", "may not contain"),
     ("-rf", "may use letters"), ("taken", "already exists")],
)  # fmt: skip
def test_bad_run_names_are_refused(tmp_path: Path, name: str, message: str) -> None:
    """Empty names, path separators, '..', odd characters and existing runs are refused with a reason."""
    (tmp_path / "taken").mkdir()
    with pytest.raises(RunError, match=message):
        jobs.validate_run_name(name, tmp_path)
    assert jobs.validate_run_name(" mnist-2d_b4.1 ", tmp_path) == "mnist-2d_b4.1"


def test_options_are_checked_and_become_flags(tmp_path: Path) -> None:
    """Bad values fail as ValueError with the config's message; good ones map to CLI flags."""
    with pytest.raises(ValueError, match="latent_dim"):
        RunOptions(latent_dim=0)
    with pytest.raises(ValueError, match="lr"):
        RunOptions(lr=0.0)
    with pytest.raises(RunError, match="does not exist"):
        RunOptions(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(RunError, match="positive whole numbers"):
        jobs.parse_hidden("512 -3")
    assert jobs.parse_hidden("512, 256") == (512, 256)
    with pytest.raises(ValueError, match="precision"):
        RunOptions(precision="fp8")
    flags = RunOptions(hidden=(8, 4), beta=4.0, precision="bf16").flags()
    assert flags[flags.index("--precision") + 1] == "bf16"
    assert flags[flags.index("--hidden") + 1 : flags.index("--hidden") + 3] == ["8", "4"]
    assert {"--timelapse", "--threads"} <= set(flags) and flags[flags.index("--beta") + 1] == "4.0"
    assert jobs.suggest_name(RunOptions(beta=4.0), tmp_path) == "mnist-mlp-z2-b4"


def test_tiny_run_trains_in_its_own_process(tmp_path: Path, data: Path) -> None:
    """A run started by the job manager writes metrics, a loadable checkpoint and a timelapse;
    a second start is refused while it trains, naming it."""
    run = jobs.start_run("tiny", tiny_options(data), tmp_path)
    assert run.status is Status.RUNNING and (run.path / "job.json").is_file()
    with pytest.raises(RunError, match="tiny is still training"):
        jobs.start_run("second", tiny_options(data), tmp_path)
    assert not (tmp_path / "second").exists()
    run = finished(run)
    assert run.status is Status.FINISHED and run.exit_code == 0, jobs.tail_log(run)
    records = jobs.read_metrics(run)
    assert {r["event"] for r in records} == {"step", "epoch"}
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1.0, 2.0]
    assert load_checkpoint(run.path).meta.epoch == 2
    assert run.path in list_checkpoints(tmp_path)
    assert [s.epoch for s in load_timelapse(run.path)] == [1, 2]
    assert [r.name for r in jobs.list_runs(tmp_path)] == ["tiny"]
    assert jobs.progress(run, records).fraction == 1.0


def test_stop_keeps_a_checkpoint_and_resume_continues(tmp_path: Path, data: Path) -> None:
    """SIGTERM stops a run with a loadable checkpoint (status stopped); resume trains it to the end."""
    run = jobs.start_run("long", tiny_options(data, epochs=500), tmp_path)
    wait_until(lambda: (run.path / "model.pt").is_file())
    jobs.stop_run(run)
    run = finished(run)
    assert run.status is Status.STOPPED and run.exit_code == 0, jobs.tail_log(run)
    assert jobs.read_metrics(run)[-1]["event"] == "interrupted"
    stopped_at = load_checkpoint(run.path).meta.epoch
    assert 1 <= stopped_at < 500
    with pytest.raises(RunError, match="not training"):
        jobs.stop_run(run)
    run = finished(jobs.resume_run(run, epochs=stopped_at + 1))
    assert run.status is Status.FINISHED, jobs.tail_log(run)
    assert load_checkpoint(run.path).meta.epoch == stopped_at + 1


def test_failing_run_is_reported_with_its_message(tmp_path: Path) -> None:
    """A run whose data folder holds no dataset ends failed, with the trainer's error line."""
    empty = tmp_path / "empty"
    empty.mkdir()
    run = finished(jobs.start_run("broken", tiny_options(empty), tmp_path / "runs"))
    assert run.status is Status.FAILED and run.exit_code == 1
    assert "The mnist train split was not found" in run.message
    assert "error: The mnist train split" in jobs.tail_log(run, 30)
    with pytest.raises(RunError, match="no checkpoint"):
        jobs.resume_run(run)


def fake_run(root: Path, name: str, *, exit_code: int | None, log: str = "", metrics: str = "") -> Path:
    """A run folder as a trainer would have left it, without any process."""
    folder = root / name
    folder.mkdir(parents=True)
    job = {"name": name, "options": {"epochs": 3}, "epochs": 3, "pid": None, "started": 1.0}
    (folder / "job.json").write_text(json.dumps(job))
    (folder / "train.log").write_text(log)
    (folder / "metrics.jsonl").write_text(metrics)
    if exit_code is not None:
        (folder / "exit_code").write_text(f"{exit_code}\n")
    return folder


def test_status_comes_from_exit_code_log_and_metrics(tmp_path: Path) -> None:
    """Exit 0 is finished (stopped if the last record is an interruption); NaN is diverged; no exit
    status from a dead process is failed."""
    nan = "error: The loss became nan (elbo) at step 40, epoch 1. Training stopped\n"
    epoch, interrupted = '{"event": "epoch", "epoch": 3}\n', '{"event": "interrupted"}\n'
    cases = {
        "done": (fake_run(tmp_path, "done", exit_code=0, metrics=epoch), "finished"),
        "paused": (fake_run(tmp_path, "paused", exit_code=0, metrics=interrupted), "stopped"),
        "nan": (fake_run(tmp_path, "nan", exit_code=1, log=nan), "diverged"),
        "killed": (fake_run(tmp_path, "killed", exit_code=None), "failed"),
    }
    for folder, status in cases.values():
        assert jobs.read_run(folder).status == status
    assert jobs.read_run(cases["nan"][0]).message.startswith("The loss became nan")
    assert "without recording its exit status" in jobs.read_run(cases["killed"][0]).message


def test_read_metrics_skips_a_half_written_line(tmp_path: Path) -> None:
    """A record still being written (no newline yet) is left out; complete ones are read."""
    folder = fake_run(tmp_path, "r", exit_code=0, metrics='{"event": "step", "step": 20}\n{"event": "st')
    assert jobs.read_metrics(folder) == [{"event": "step", "step": 20}]
    assert jobs.read_metrics(tmp_path / "nothing") == []


def test_tail_log_splits_progress_bars(tmp_path: Path) -> None:
    """Carriage-return progress updates count as lines; only the last n come back."""
    folder = fake_run(tmp_path, "r", exit_code=0, log="a\n 10%\r 20%\r 30%\nerror: boom\n")
    run = jobs.read_run(folder)
    assert jobs.tail_log(run, 2) == " 30%\nerror: boom"
