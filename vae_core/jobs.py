"""Training jobs started from the app: each one a `python -m vae_core train` process of its own.

    runs/NAME/job.json       how the run was started: its spec, runtime, command, pid, start time
    runs/NAME/train.log      the trainer's stdout and stderr, for people (never parsed)
    runs/NAME/outcome.json   written by the trainer when it ends (`vae_core.records`)
    runs/NAME/model.pt, metrics.jsonl, timelapse/ ...   the checkpoint folder the trainer writes
    runs/NAME/evaluate.json, evaluate.log   an evaluation (`python -m vae_core evaluate --write`) of it

The trainer runs in a new session, so leaving the page, reloading or stopping the web server does
not stop it; `stop_run` sends it SIGTERM, on which it finishes its step, saves and exits 0. An
evaluation is a process of the same kind, `start_evaluation`, that stores the test NLL in the model
card. `delete_run` removes a run's folder, only inside the runs folder and never while it works. A run's
status is its outcome file once the trainer has ended; before that, whether its process lives. So
every page and every server process sees the same thing. `VAE_RUNS_DIR` moves the runs folder;
`VAE_MAX_JOBS` (default 1) is how many runs may train at once. A trainer runs with one thread and
a lower priority than the server (`TRAINER_NICENESS`), so interactive sessions stay responsive.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from vae_core import budget
from vae_core.atomic import atomic_write_text
from vae_core.checkpoint import STATE_FILE, CheckpointError, model_file, read_checkpoint, read_spec
from vae_core.data import PROJECT_ROOT
from vae_core.records import Record, clear_outcome, read_outcome
from vae_core.spec import RunSpec, Runtime, runtime_argv, to_argv

JOB_FILE, LOG_FILE = "job.json", "train.log"
EVAL_FILE, EVAL_LOG = "evaluate.json", "evaluate.log"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
LOW_DISK_BYTES = 16 * 2**20  # less free space than a checkpoint, its log and a snapshot take
APP_THREADS = 1  # a run started from the app leaves the other cores to the app's sessions
# A run started from the app runs this much nicer than the server, so that on a busy machine the CPU
# goes to interactive sessions first and training takes what is left (bench/concurrency.py measures it).
TRAINER_NICENESS = 10
MAX_NICENESS = 19  # the lowest priority on POSIX

# The trainers this process started, kept so that they are reaped (no zombies) once they end.
_CHILDREN: dict[int, subprocess.Popen] = {}


class RunError(ValueError):
    """A run that cannot be started, stopped or resumed; the message says why and what to do."""


class Status(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"  # by SIGTERM; resumable from its last checkpoint
    DIVERGED = "diverged"  # the loss became NaN or infinite
    FAILED = "failed"


def runs_dir() -> Path:
    """Where runs live: $VAE_RUNS_DIR, else runs/ in the project."""
    return Path(os.environ.get("VAE_RUNS_DIR") or PROJECT_ROOT / "runs")


def max_jobs() -> int:
    """How many runs may train at the same time: $VAE_MAX_JOBS, default 1."""
    try:
        return max(1, int(os.environ.get("VAE_MAX_JOBS", "1")))
    except ValueError:
        return 1


@dataclass(frozen=True)
class Run:
    """One run folder and what is known about it now."""

    name: str
    path: Path
    status: Status
    spec: RunSpec  # what it trains (a resume may raise the epoch total)
    runtime: Runtime = field(default_factory=Runtime)
    started: float = 0.0
    pid: int | None = None
    command: list[str] = field(default_factory=list)
    exit_code: int | None = None  # known when this process started the trainer and it has ended
    message: str = ""  # how it finished, stopped, diverged or failed

    @property
    def epochs(self) -> int:
        """The epoch total it trains to."""
        return self.spec.train.epochs

    @property
    def log(self) -> Path:
        return self.path / LOG_FILE

    @property
    def has_checkpoint(self) -> bool:
        return model_file(self.path).is_file() and (self.path / STATE_FILE).is_file()


# ---------------------------------------------------------------- names


def validate_run_name(name: str, root: str | Path | None = None) -> str:
    """The run name, stripped; RunError if it is empty, not a plain folder name, or taken."""
    name = name.strip()
    root = Path(root) if root is not None else runs_dir()
    if not name:
        raise RunError("Give the run a name, e.g. mnist-2d-beta4.")
    if "/" in name or "\\" in name or ".." in name:
        raise RunError(
            f"The run name {name!r} may not contain '/', '\\' or '..': it names one folder in {root}."
        )
    if not NAME_PATTERN.fullmatch(name) or len(name) > 100:
        raise RunError(
            f"The run name {name!r} may use letters, digits, '.', '_' and '-' (up to 100), starting with a "
            f"letter or digit."
        )
    if (root / name).exists():
        raise RunError(
            f"A run named {name!r} already exists in {root}: pick another name, or resume that one."
        )
    return name


def suggest_name(spec: RunSpec, root: str | Path | None = None) -> str:
    """A free name describing the run, e.g. mnist-mlp-z2, then mnist-mlp-z2-2, ..."""
    root = Path(root) if root is not None else runs_dir()
    beta = spec.train.beta
    base = f"{spec.data.name}-{spec.model.arch}-z{spec.model.latent_dim}" + (f"-b{beta:g}" * (beta != 1))
    n = 1
    while (root / (base if n == 1 else f"{base}-{n}")).exists():
        n += 1
    return base if n == 1 else f"{base}-{n}"


# ---------------------------------------------------------------- starting, stopping, resuming


@contextmanager
def _lock(root: Path) -> Iterator[None]:
    """One start or resume at a time across every server process, so the job limit holds."""
    import fcntl  # POSIX only: imported here so that `import vae_core` works everywhere

    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check_capacity(root: Path) -> None:
    running = [r.name for r in list_runs(root) if r.status is Status.RUNNING]
    if len(running) >= max_jobs():
        raise RunError(
            f"{', '.join(running)} is still training (at most {max_jobs()} run(s) at a time, "
            f"set by VAE_MAX_JOBS). Wait for it to finish or stop it first."
        )


def _launch(folder: Path, train_flags: list[str]) -> tuple[int, list[str]]:
    """Start the trainer in a session of its own; returns (pid, command)."""
    command = [sys.executable, "-m", "vae_core", "train", "--out", str(folder), *train_flags]
    clear_outcome(folder)  # a resumed run's previous ending
    return _spawn(command, folder / LOG_FILE), command


def _spawn(command: list[str], log_file: Path, env: dict[str, str] | None = None) -> int:
    """Start `command` (an argument list, no shell) in a session of its own, its output appended to
    log_file; returns its pid."""
    with log_file.open("a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        # cwd is the project root, so `-m vae_core` imports this package.
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    _lower_priority(process.pid)
    _CHILDREN[process.pid] = process
    return process.pid


def _lower_priority(pid: int) -> None:
    """Make the trainer TRAINER_NICENESS nicer than this process. Set from here, right after it is
    started (a `preexec_fn` is unsafe in a threaded server): it has made no threads yet, and those it
    makes inherit its niceness. Where that is not permitted, it trains at the server's priority."""
    with suppress(OSError):
        niceness = min(os.getpriority(os.PRIO_PROCESS, 0) + TRAINER_NICENESS, MAX_NICENESS)
        os.setpriority(os.PRIO_PROCESS, pid, niceness)


def _write_job(folder: Path, job: dict) -> None:
    atomic_write_text(folder / JOB_FILE, json.dumps(job, indent=1))


def app_runtime(data_dir: str | Path | None = None, device: str = "auto") -> Runtime:
    """How the app runs a trainer: one thread, a timelapse; RunError if the data folder is missing."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise RunError(f"The data folder {data_dir} does not exist; leave it empty to look the dataset up")
    folder = str(Path(data_dir).resolve()) if data_dir is not None else None
    return Runtime(data_dir=folder, device=device, threads=APP_THREADS, timelapse=True)


def start_run(
    name: str, spec: RunSpec, root: str | Path | None = None, *, data_dir: str | Path | None = None,
    device: str = "auto",
) -> Run:  # fmt: skip
    """Start training a new run NAME in its own process; RunError (or BudgetError, for a model too
    large for the operator's memory budget) if refused, OSError on disk trouble."""
    root = Path(root) if root is not None else runs_dir()
    runtime = app_runtime(data_dir, device)
    budget.check(spec)  # a BudgetError (a ValueError) before any folder or process exists
    with _lock(root):
        name = validate_run_name(name, root)
        _check_capacity(root)
        folder = (root / name).resolve()
        folder.mkdir(parents=True)
        pid, command = _launch(folder, [*to_argv(spec), *runtime_argv(runtime)])
        _write_job(
            folder,
            {"name": name, "spec": spec.to_dict(), "runtime": asdict(runtime), "pid": pid, "command": command,
             "started": time.time()},
        )  # fmt: skip
    return read_run(folder)


def resume_run(run: Run, epochs: int | None = None) -> Run:
    """Continue a stopped (or failed) run from its last checkpoint, optionally to a new epoch total;
    a finished run only to a higher total than it has trained.

    The trainer continues the spec stored in the checkpoint; the job file's spec follows it."""
    if run.status is Status.RUNNING:
        raise RunError(f"{run.name} is still training.")
    _check_not_evaluating(run)
    if not run.has_checkpoint:
        raise RunError(
            f"{run.name} has no checkpoint to resume from (it ended before its first step); start a new run."
        )
    try:
        spec = read_spec(run.path)
    except CheckpointError as e:  # damaged, non-finite or too large for this server's budget
        raise RunError(f"{run.name} cannot be resumed: {e}") from e
    spec = spec.with_values({"train": {"epochs": epochs}}) if epochs else spec
    if run.status is Status.FINISHED and spec.train.epochs <= (done := saved(run)[0]):
        raise RunError(
            f"{run.name} has finished its {done} epochs: give a higher epoch total to train it further."
        )
    with _lock(run.path.parent):
        _check_capacity(run.path.parent)
        flags = ["--resume", "--epochs", str(spec.train.epochs), *runtime_argv(run.runtime)]
        pid, command = _launch(run.path, flags)
        job = json.loads((run.path / JOB_FILE).read_text())
        job |= {"spec": spec.to_dict(), "pid": pid, "command": command, "resumed": time.time()}
        _write_job(run.path, job)
    return read_run(run.path)


def stop_run(run: Run) -> None:
    """Ask the trainer to stop (SIGTERM): it finishes its step, saves a checkpoint and exits 0."""
    if run.pid is None or not _alive(run.pid) or read_outcome(run.path) is not None:
        raise RunError(f"{run.name} is not training (status: {read_run(run.path).status}).")
    os.kill(run.pid, signal.SIGTERM)


# ---------------------------------------------------------------- evaluating and deleting

EVAL_K = 1000  # the app's default importance samples for the test NLL (the CLI's is 5000)


@dataclass(frozen=True)
class Evaluation:
    """The last evaluation of a run: its importance samples k, whether it still runs, how it ended."""

    k: int
    started: float
    running: bool
    exit_code: int | None = None  # known when this process started it and it has ended
    log: str = ""  # its last lines

    @property
    def failed(self) -> bool:
        return not self.running and self.exit_code not in (None, 0)


def start_evaluation(run: Run, k: int = EVAL_K) -> Evaluation:
    """Measure a run's checkpoint on its test set in a process of its own (`python -m vae_core evaluate
    RUN --write --k K`): ELBO terms, KL per dimension and the IWAE NLL go into its model card."""
    if k < 1:
        raise RunError(f"The NLL needs at least 1 importance sample, got k = {k}.")
    if run.status is Status.RUNNING:
        raise RunError(f"{run.name} is still training: evaluate it once it has ended.")
    if not model_file(run.path).is_file():
        raise RunError(f"{run.name} has no checkpoint to evaluate (it ended before its first step).")
    _check_not_evaluating(run)
    command = [sys.executable, "-m", "vae_core", "evaluate", str(run.path), "--write", "--k", str(k)]
    command += ["--device", run.runtime.device]
    command += ["--data-dir", run.runtime.data_dir] if run.runtime.data_dir else []
    threads = str(run.runtime.threads or APP_THREADS)
    pid = _spawn(command, run.path / EVAL_LOG, {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    job = {"k": k, "pid": pid, "command": command, "started": time.time()}
    atomic_write_text(run.path / EVAL_FILE, json.dumps(job, indent=1))
    return evaluation(run)


def evaluation(run: Run) -> Evaluation | None:
    """The run's last evaluation as it stands now, or None if it was never evaluated from the app."""
    try:
        job = json.loads((run.path / EVAL_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    pid = job.get("pid")
    child = _CHILDREN.get(pid)
    running = pid is not None and _alive(pid) and _is_evaluator(pid)
    log = "\n".join(tail_lines(run.path / EVAL_LOG, 12))
    exit_code = child.returncode if child else None
    return Evaluation(job.get("k", 0), job.get("started", 0.0), running, exit_code, log)


def _is_evaluator(pid: int) -> bool:
    """Whether pid still is an evaluation (our own child, or another process's `vae_core evaluate`)."""
    if pid in _CHILDREN:
        return True
    try:
        return b"evaluate" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc to ask: trust the signal


def _check_not_evaluating(run: Run) -> None:
    current = evaluation(run)
    if current is not None and current.running:
        raise RunError(f"{run.name} is being evaluated (NLL, k = {current.k}): wait for it to finish.")


def saved(run: Run) -> tuple[int, dict]:
    """The epoch and the metrics (its model card) of a run's checkpoint; (0, {}) while it has none
    or it cannot be read."""
    try:
        ckpt = read_checkpoint(run.path)
    except (OSError, ValueError):
        return 0, {}
    return int(ckpt.get("epoch", 0)), dict(ckpt["metrics"])


def delete_run(run: Run, root: str | Path | None = None) -> None:
    """Delete a run's folder and everything in it; RunError if it trains or is being evaluated, or if
    its folder is not a run folder directly inside the runs folder (nothing else is ever deleted)."""
    root = (Path(root) if root is not None else runs_dir()).resolve()
    folder = Path(run.path)
    if folder.is_symlink() or folder.resolve().parent != root or not (folder / JOB_FILE).is_file():
        raise RunError(f"{folder} is not a run folder inside {root}: it is not deleted.")
    current = read_run(folder)
    if current.status is Status.RUNNING:
        raise RunError(f"{run.name} is still training: stop it before deleting it.")
    _check_not_evaluating(current)
    shutil.rmtree(folder.resolve())


# ---------------------------------------------------------------- status


def _alive(pid: int) -> bool:
    """Whether the process lives: our own child by polling it (which reaps it), another by signal 0."""
    if pid in _CHILDREN:
        return _CHILDREN[pid].poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process reusing the pid
    return True


def _status(folder: Path, pid: int | None) -> tuple[Status, str]:
    """Running while the trainer lives; then the outcome it recorded, or failed without one.

    A trainer of another process is taken as ended once it has recorded an outcome (its pid may be
    reused later); one of ours is also waited for to exit, so that its exit status is known."""
    outcome = read_outcome(folder)
    ours_alive = pid in _CHILDREN and _alive(pid)
    if ours_alive or (outcome is None and pid is not None and _alive(pid)):
        return Status.RUNNING, ""
    if outcome is not None:
        return Status(outcome.status), outcome.message
    return Status.FAILED, _without_outcome(folder)


def _without_outcome(folder: Path) -> str:
    """Why a trainer that has ended left no outcome: a full disk if it looks so, else a kill."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = LOW_DISK_BYTES
    if free < LOW_DISK_BYTES:
        return (
            f"The trainer ended without recording an outcome, and the disk holding {folder} is full "
            f"({free / 2**20:.1f} MiB free): it most likely failed writing there. Free some space, then "
            f"resume the run from its last checkpoint."
        )
    return "The trainer ended without recording an outcome (killed?)."


def read_run(folder: str | Path) -> Run:
    """A run as it stands now, from its folder."""
    folder = Path(folder)
    job = json.loads((folder / JOB_FILE).read_text())
    pid = job.get("pid")
    status, message = _status(folder, pid)
    child = _CHILDREN.get(pid) if pid is not None else None
    return Run(
        name=folder.name,
        path=folder,
        status=status,
        spec=_job_spec(job),
        runtime=Runtime(**job.get("runtime", {})),
        started=job.get("started", 0.0),
        pid=pid,
        command=job.get("command", []),
        exit_code=child.returncode if child else None,
        message=message,
    )


def _job_spec(job: dict) -> RunSpec:
    """The spec of a job file; RunError naming the file if it holds none that is valid."""
    try:
        return RunSpec.from_dict(job["spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"The job file of {job.get('name', '?')} holds no valid run spec: {e}") from e


def list_runs(root: str | Path | None = None) -> list[Run]:
    """Every run under the runs folder, newest first."""
    root = Path(root) if root is not None else runs_dir()
    runs = [read_run(job.parent) for job in root.glob(f"*/{JOB_FILE}")] if root.is_dir() else []
    return sorted(runs, key=lambda r: r.started, reverse=True)


# ---------------------------------------------------------------- following a run


def tail_lines(file: Path, n: int, max_bytes: int = 65536) -> list[str]:
    """The last n non-empty lines of a text file; progress bars' carriage returns split lines too."""
    try:
        with file.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in re.split(r"[\r\n]+", text) if line.strip()][-n:]


def tail_log(run: Run, n: int = 20) -> str:
    """The last n lines of a run's log."""
    return "\n".join(tail_lines(run.log, n))


@dataclass(frozen=True)
class Progress:
    """How far a run is: epochs done (fractional) of the total, and the estimated seconds left."""

    epoch: float
    epochs: int
    eta_s: float | None

    @property
    def fraction(self) -> float:
        return min(1.0, self.epoch / self.epochs) if self.epochs else 0.0


def progress(run: Run, records: list[Record]) -> Progress:
    """Progress from the latest record; the ETA extrapolates the wall time per epoch so far."""
    if not records:
        return Progress(0.0, run.epochs, None)
    epoch, wall = float(records[-1].epoch), float(records[-1].wall_time)
    eta = wall / epoch * max(run.epochs - epoch, 0.0) if epoch > 0 and run.status is Status.RUNNING else None
    return Progress(epoch, run.epochs, eta)
