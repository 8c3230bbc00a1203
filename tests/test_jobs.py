"""The job manager: names, options, a tiny run in its own process, stop, resume, failures, statuses."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.test_cli import idx_folder
from vae_core import RunSpec, jobs, list_checkpoints, load_checkpoint, read_metrics
from vae_core.jobs import RunError, Status
from vae_core.records import EpochRecord, Outcome, StepRecord, write_outcome
from vae_core.spec import parse_ints, runtime_argv, to_argv
from vae_core.timelapse import load_timelapse


def tiny_spec(**train) -> RunSpec:
    """A run on the synthetic 256-image set: 16 steps per epoch, a step record at step 20."""
    return RunSpec.from_values({"model": {"hidden": (16,), "latent_dim": 2},
                                "train": {"epochs": 2, "batch_size": 16, **train}})  # fmt: skip


def start(name: str, root: Path, data: Path, spec: RunSpec | None = None) -> jobs.Run:
    return jobs.start_run(name, spec or tiny_spec(), root, data_dir=data, device="cpu")


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


def test_specs_are_checked_and_become_flags(tmp_path: Path) -> None:
    """Bad values fail as ValueError naming the option; a missing data folder is a RunError; a spec
    and the app's runtime map to CLI flags."""
    with pytest.raises(ValueError, match="latent_dim"):
        RunSpec.from_values({"model": {"latent_dim": 0}})
    with pytest.raises(ValueError, match="lr"):
        RunSpec.from_values({"train": {"lr": 0.0}})
    with pytest.raises(RunError, match="does not exist"):
        jobs.app_runtime(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="positive whole numbers"):
        parse_ints("512 -3")
    assert parse_ints("512, 256") == (512, 256)
    with pytest.raises(ValueError, match="precision"):
        RunSpec.from_values({"train": {"precision": "fp8"}})
    flags = to_argv(
        RunSpec.from_values({"model": {"hidden": (8, 4)}, "train": {"beta": 4.0, "precision": "bf16"}})
    )
    flags += runtime_argv(jobs.app_runtime())
    assert flags[flags.index("--precision") + 1] == "bf16"
    assert flags[flags.index("--hidden") + 1 : flags.index("--hidden") + 3] == ["8", "4"]
    assert {"--timelapse", "--threads"} <= set(flags) and flags[flags.index("--beta") + 1] == "4.0"
    assert jobs.suggest_name(RunSpec.from_values({"train": {"beta": 4.0}}), tmp_path) == "mnist-mlp-z2-b4"


def test_tiny_run_trains_in_its_own_process(tmp_path: Path, data: Path) -> None:
    """A run started by the job manager writes metrics, a loadable checkpoint and a timelapse;
    a second start is refused while it trains, naming it."""
    run = start("tiny", tmp_path, data)
    assert run.status is Status.RUNNING and (run.path / "job.json").is_file()
    assert RunSpec.from_dict(json.loads((run.path / "job.json").read_text())["spec"]) == tiny_spec()
    with pytest.raises(RunError, match="tiny is still training"):
        start("second", tmp_path, data)
    assert not (tmp_path / "second").exists()
    run = finished(run)
    assert run.status is Status.FINISHED and run.exit_code == 0, jobs.tail_log(run)
    assert run.message == "Finished at epoch 2, step 32."
    records = read_metrics(run.path)
    assert {r.event for r in records} == {"step", "epoch"}
    assert [r.epoch for r in records if r.event == "epoch"] == [1.0, 2.0]
    assert load_checkpoint(run.path).meta.spec == tiny_spec()
    assert load_checkpoint(run.path).meta.epoch == 2
    assert run.path in list_checkpoints(tmp_path)
    assert [s.epoch for s in load_timelapse(run.path)] == [1, 2]
    assert [r.name for r in jobs.list_runs(tmp_path)] == ["tiny"]
    assert jobs.progress(run, records).fraction == 1.0


def test_stop_keeps_a_checkpoint_and_resume_continues(tmp_path: Path, data: Path) -> None:
    """SIGTERM stops a run with a loadable checkpoint (status stopped); resume trains it to the end."""
    run = start("long", tmp_path, data, tiny_spec(epochs=500))
    wait_until(lambda: (run.path / "model.pt").is_file())
    jobs.stop_run(run)
    run = finished(run)
    assert run.status is Status.STOPPED and run.exit_code == 0, jobs.tail_log(run)
    assert read_metrics(run.path)[-1].event == "interrupted"
    stopped_at = load_checkpoint(run.path).meta.epoch
    assert run.message.startswith(f"Stopped at epoch {stopped_at}, step ")
    assert 1 <= stopped_at < 500
    with pytest.raises(RunError, match="not training"):
        jobs.stop_run(run)
    run = finished(jobs.resume_run(run, epochs=stopped_at + 1))
    assert run.status is Status.FINISHED, jobs.tail_log(run)
    assert load_checkpoint(run.path).meta.epoch == stopped_at + 1
    assert run.epochs == stopped_at + 1 == load_checkpoint(run.path).meta.spec.train.epochs


def test_failing_run_is_reported_with_its_message(tmp_path: Path) -> None:
    """A run whose data folder holds no dataset ends failed, with the trainer's error line."""
    empty = tmp_path / "empty"
    empty.mkdir()
    run = finished(start("broken", tmp_path / "runs", empty))
    assert run.status is Status.FAILED and run.exit_code == 1
    assert "The mnist train split was not found" in run.message
    assert "error: The mnist train split" in jobs.tail_log(run, 30)
    with pytest.raises(RunError, match="no checkpoint"):
        jobs.resume_run(run)


def test_a_diverging_run_is_shown_as_diverged(tmp_path: Path, data: Path) -> None:
    """A run started by the app whose loss becomes NaN or infinite reads as diverged, with the
    trainer's message, however its log ends."""
    run = finished(start("nan", tmp_path, data, tiny_spec(lr=1e6, log_every=1)))
    assert run.status is Status.DIVERGED and run.exit_code == 1, jobs.tail_log(run)
    assert run.message.startswith("The loss became") and "at step" in run.message


def test_a_killed_run_reads_as_failed(tmp_path: Path, data: Path) -> None:
    """A trainer killed with SIGKILL records no outcome: once its process is gone it reads as failed."""
    run = start("killed", tmp_path, data, tiny_spec(epochs=500))
    wait_until(lambda: read_metrics(run.path))
    os.kill(run.pid, signal.SIGKILL)
    run = finished(run)
    assert run.status is Status.FAILED and run.exit_code == -signal.SIGKILL
    assert "ended without recording an outcome (killed?)" in run.message


def step_record(step: int) -> StepRecord:
    return StepRecord(step=step, epoch=step / 10, elbo=-200.0, recon=190.0, kl=10.0, beta=1.0, lr=1e-3,
                      samples_per_s=5000.0, wall_time=step / 10)  # fmt: skip


def epoch_record(step: int, event: str = "epoch") -> EpochRecord:
    return EpochRecord(step=step, epoch=step / 10, test_elbo=-180.0, test_recon=170.0, test_kl=10.0,
                       active_units=2, beta=1.0, lr=1e-3, wall_time=step / 10, event=event)  # fmt: skip


def records_text(*records: StepRecord | EpochRecord) -> str:
    return "".join(json.dumps(asdict(r)) + "\n" for r in records)


def fake_run(root: Path, name: str, *, outcome: Outcome | None, log: str = "", metrics: str = "") -> Path:
    """A run folder as a trainer would have left it, without any process."""
    folder = root / name
    folder.mkdir(parents=True)
    spec = RunSpec.from_values({"train": {"epochs": 3}})
    job = {"name": name, "spec": spec.to_dict(), "pid": None, "started": 1.0}
    (folder / "job.json").write_text(json.dumps(job))
    (folder / "train.log").write_text(log)
    (folder / "metrics.jsonl").write_text(metrics)
    if outcome is not None:
        write_outcome(folder, outcome)
    return folder


def test_status_comes_from_the_outcome_file(tmp_path: Path) -> None:
    """The trainer's outcome file gives the status and message, whatever the log says; a run whose
    process is gone without one is failed."""
    nan = "The loss became nan (elbo) at step 40, epoch 1. Training stopped"
    cases = {
        "done": (Outcome("finished", "Finished at epoch 3, step 30.", 3, 30), "finished"),
        "paused": (
            Outcome("stopped", "Stopped at epoch 1, step 12; resume it to continue.", 1, 12),
            "stopped",
        ),
        "nan": (Outcome("diverged", nan, 0, 40), "diverged"),
        "broken": (Outcome("failed", "The mnist train split was not found"), "failed"),
        "killed": (None, "failed"),
    }
    for name, (outcome, status) in cases.items():
        folder = fake_run(tmp_path, name, outcome=outcome, log="epoch 1:  50%|#####  \r" * 3)
        run = jobs.read_run(folder)
        assert run.status == status and (outcome is None or run.message == outcome.message)
    assert "without recording an outcome" in jobs.read_run(tmp_path / "killed").message


def test_read_metrics_skips_a_half_written_line(tmp_path: Path) -> None:
    """A record still being written (no newline yet) is left out; complete ones are read, typed."""
    folder = fake_run(tmp_path, "r", outcome=None, metrics=records_text(step_record(20)) + '{"event": "st')
    assert read_metrics(folder) == [step_record(20)]
    assert read_metrics(tmp_path / "nothing") == []


def test_tail_log_splits_progress_bars(tmp_path: Path) -> None:
    """Carriage-return progress updates count as lines; only the last n come back."""
    folder = fake_run(tmp_path, "r", outcome=None, log="a\n 10%\r 20%\r 30%\nerror: boom\n")
    run = jobs.read_run(folder)
    assert jobs.tail_log(run, 2) == " 30%\nerror: boom"


def test_a_trainer_runs_nicer_than_the_server(tmp_path: Path, data: Path) -> None:
    """Every thread of a started trainer runs TRAINER_NICENESS nicer than the process that started it,
    so that interactive sessions get the CPU first."""
    run = start("nice", tmp_path, data, tiny_spec(epochs=500))
    try:
        wait_until(lambda: len(list(Path(f"/proc/{run.pid}/task").iterdir())) > 1)  # torch has started
        expected = min(os.getpriority(os.PRIO_PROCESS, 0) + jobs.TRAINER_NICENESS, jobs.MAX_NICENESS)
        threads = [int(t.name) for t in Path(f"/proc/{run.pid}/task").iterdir()]
        assert [os.getpriority(os.PRIO_PROCESS, t) for t in threads] == [expected] * len(threads)
    finally:
        jobs.stop_run(run)
        finished(run)
