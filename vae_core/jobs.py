"""Training jobs started from the app: each one a `python -m vae_core train` process of its own.

    runs/NAME/job.json       how the run was started: options, command, pid, start time
    runs/NAME/train.log      the trainer's stdout and stderr
    runs/NAME/exit_code      written by the launching shell when the trainer ends
    runs/NAME/model.pt, metrics.jsonl, timelapse/ ...   the checkpoint folder the trainer writes

The trainer runs in a new session, so leaving the page, reloading or stopping the web server does
not stop it; `stop_run` sends it SIGTERM, on which it finishes its step, saves and exits 0. A run's
status is derived from the files and the process table alone, so every page and every server
process sees the same thing. `VAE_RUNS_DIR` moves the runs folder; `VAE_MAX_JOBS` (default 1) is how
many runs may train at once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path

from vae_core.checkpoint import METRICS_FILE, STATE_FILE, model_file
from vae_core.data import PROJECT_ROOT
from vae_core.model import VAEConfig
from vae_core.training import TrainConfig

JOB_FILE, LOG_FILE, EXIT_FILE, PID_FILE = "job.json", "train.log", "exit_code", "trainer.pid"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# The launching shell: start the trainer, note its pid (the one to signal), wait, record its status.
WRAPPER = (
    '"$@" & echo $! > "$0/trainer.pid"; wait $!; '
    'echo $? > "$0/exit_code.tmp"; mv "$0/exit_code.tmp" "$0/exit_code"'
)


# The launchers this process started, kept so that they are reaped (no zombies) once they end.
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
class RunOptions:
    """What the train form asks for; turned into `python -m vae_core train` flags."""

    dataset: str = "mnist"
    arch: str = "mlp"
    hidden: tuple[int, ...] = (400,)
    latent_dim: int = 2
    beta: float = 1.0
    warmup_epochs: float = 0.0
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    binarize: str = "dynamic"
    seed: int = 0
    data_dir: str | None = None
    device: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        # The model and training configs check every value, with the same messages as the CLI.
        VAEConfig(arch=self.arch, latent_dim=self.latent_dim, hidden=self.hidden)
        TrainConfig(
            dataset=self.dataset, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, beta=self.beta,
            warmup_epochs=self.warmup_epochs, binarize=self.binarize, seed=self.seed,
            precision=self.precision,
        )  # fmt: skip
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise RunError(
                f"The data folder {self.data_dir} does not exist; leave it empty to look up {self.dataset}"
            )

    def flags(self) -> list[str]:
        flags = [
            "--dataset", self.dataset, "--arch", self.arch, "--hidden", *map(str, self.hidden),
            "--latent-dim", str(self.latent_dim), "--beta", repr(self.beta),
            "--warmup-epochs", repr(self.warmup_epochs), "--epochs", str(self.epochs),
            "--batch-size", str(self.batch_size), "--lr", repr(self.lr),
            "--binarize", self.binarize, "--seed", str(self.seed), "--precision", self.precision,
        ]  # fmt: skip
        return flags + _common_flags(self)


def _common_flags(options: RunOptions) -> list[str]:
    """Flags a resumed run needs again: they are not stored in the checkpoint."""
    data = ["--data-dir", str(Path(options.data_dir).resolve())] if options.data_dir else []
    return [*data, "--device", options.device, "--threads", "1", "--timelapse"]


def parse_hidden(text: str) -> tuple[int, ...]:
    """'512 256' or '512, 256' -> (512, 256)."""
    parts = text.replace(",", " ").split()
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise RunError(
            f"Hidden sizes must be positive whole numbers separated by spaces, e.g. '512 256'; got {text!r}"
        )
    return tuple(int(p) for p in parts)


@dataclass(frozen=True)
class Run:
    """One run folder and what is known about it now."""

    name: str
    path: Path
    status: Status
    options: RunOptions
    started: float = 0.0
    epochs: int = 0  # the total it trains to (a resume may raise it)
    pid: int | None = None
    command: list[str] = field(default_factory=list)
    exit_code: int | None = None
    message: str = ""  # why it failed, diverged or stopped

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


def suggest_name(options: RunOptions, root: str | Path | None = None) -> str:
    """A free name describing the run, e.g. mnist-mlp-z2, then mnist-mlp-z2-2, ..."""
    root = Path(root) if root is not None else runs_dir()
    base = f"{options.dataset}-{options.arch}-z{options.latent_dim}" + (
        f"-b{options.beta:g}" if options.beta != 1 else ""
    )
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
    """Start the trainer in a session of its own through the wrapper shell; returns (pid, command)."""
    command = [sys.executable, "-m", "vae_core", "train", "--out", str(folder), *train_flags]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    env["PYTHONUNBUFFERED"] = "1"
    for stale in (EXIT_FILE, PID_FILE):
        (folder / stale).unlink(missing_ok=True)
    with (folder / LOG_FILE).open("a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(
            ["/bin/sh", "-c", WRAPPER, str(folder), *command],
            cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    _CHILDREN[process.pid] = process
    return process.pid, command


def _write_job(folder: Path, job: dict) -> None:
    tmp = folder / f".{JOB_FILE}.tmp"
    tmp.write_text(json.dumps(job, indent=1))
    os.replace(tmp, folder / JOB_FILE)


def start_run(name: str, options: RunOptions, root: str | Path | None = None) -> Run:
    """Start training a new run NAME in its own process; RunError if refused, OSError on disk trouble."""
    root = Path(root) if root is not None else runs_dir()
    with _lock(root):
        name = validate_run_name(name, root)
        _check_capacity(root)
        folder = (root / name).resolve()
        folder.mkdir(parents=True)
        pid, command = _launch(folder, options.flags())
        _write_job(
            folder,
            {"name": name, "options": asdict(options), "epochs": options.epochs, "pid": pid,
             "command": command, "started": time.time()},
        )  # fmt: skip
    return read_run(folder)


def resume_run(run: Run, epochs: int | None = None) -> Run:
    """Continue a stopped (or failed) run from its last checkpoint, optionally to a new epoch total."""
    if run.status is Status.RUNNING:
        raise RunError(f"{run.name} is still training.")
    if not run.has_checkpoint:
        raise RunError(
            f"{run.name} has no checkpoint to resume from (it ended before its first step); start a new run."
        )
    total = epochs or run.epochs
    with _lock(run.path.parent):
        _check_capacity(run.path.parent)
        pid, command = _launch(run.path, ["--resume", "--epochs", str(total), *_common_flags(run.options)])
        job = json.loads((run.path / JOB_FILE).read_text())
        _write_job(run.path, job | {"pid": pid, "command": command, "epochs": total, "resumed": time.time()})
    return read_run(run.path)


def stop_run(run: Run, timeout: float = 2.0) -> None:
    """Ask the trainer to stop (SIGTERM): it finishes its step, saves a checkpoint and exits 0."""
    deadline = time.monotonic() + timeout
    while not (run.path / PID_FILE).is_file() and time.monotonic() < deadline:
        time.sleep(0.05)  # the wrapper has not written the trainer's pid yet
    pid = _read_int(run.path / PID_FILE)
    if pid is None or not _alive(pid, run.path):
        raise RunError(f"{run.name} is not training (status: {read_run(run.path).status}).")
    os.kill(pid, signal.SIGTERM)


# ---------------------------------------------------------------- status


def _read_int(file: Path) -> int | None:
    try:
        return int(file.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int, folder: Path) -> bool:
    """Whether pid is running and really is this run's process (not a reused pid, not a zombie)."""
    if pid in _CHILDREN and _CHILDREN[pid].poll() is not None:
        del _CHILDREN[pid]  # our own child, reaped: it has ended
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process reusing the pid
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.parent.is_dir():
        return True  # no /proc (macOS): trust the pid
    try:
        command = cmdline.read_bytes()
        zombie = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
    # An empty command line that is not a zombie's: a process we have just started, still exec'ing.
    return str(folder).encode() in command or (not command and not zombie)


def _outcome(folder: Path, exit_code: int | None, last_event: str | None) -> tuple[Status, str]:
    """Status and message of a run whose process has ended."""
    errors = [
        line.removeprefix("error: ")
        for line in tail_lines(folder / LOG_FILE, 50)
        if line.startswith("error: ")
    ]
    error = errors[-1] if errors else ""
    if exit_code == 0 and last_event == "interrupted":
        return Status.STOPPED, "Stopped; resume it to continue."
    if exit_code == 0:
        return Status.FINISHED, ""
    if exit_code == 128 + signal.SIGTERM:
        return Status.STOPPED, "Stopped before training began (no checkpoint)."
    if "The loss became" in error:
        return Status.DIVERGED, error
    if exit_code is None:
        return (
            Status.FAILED,
            error or "The training process ended without recording its exit status (killed?).",
        )
    return Status.FAILED, error or f"The trainer exited with status {exit_code}; see its log."


def read_run(folder: str | Path) -> Run:
    """A run as it stands now, from its folder."""
    folder = Path(folder)
    job = json.loads((folder / JOB_FILE).read_text())
    pid, exit_code = job.get("pid"), _read_int(folder / EXIT_FILE)
    if exit_code is None and pid is not None and _alive(pid, folder):
        status, message = Status.RUNNING, ""
    else:
        records = read_metrics(folder)
        status, message = _outcome(folder, exit_code, records[-1]["event"] if records else None)
    return Run(
        name=folder.name, path=folder, status=status, options=_options(job),
        started=job.get("started", 0.0), epochs=job.get("epochs", 0), pid=pid, command=job.get("command", []),
        exit_code=exit_code, message=message,
    )  # fmt: skip


def _options(job: dict) -> RunOptions:
    """The stored options, without re-validating them (the data folder may have moved since)."""
    options, stored = object.__new__(RunOptions), job["options"]
    for f in fields(RunOptions):
        value = stored.get(f.name, f.default)
        object.__setattr__(options, f.name, tuple(value) if f.name == "hidden" else value)
    return options


def list_runs(root: str | Path | None = None) -> list[Run]:
    """Every run under the runs folder, newest first."""
    root = Path(root) if root is not None else runs_dir()
    runs = [read_run(job.parent) for job in root.glob(f"*/{JOB_FILE}")] if root.is_dir() else []
    return sorted(runs, key=lambda r: r.started, reverse=True)


# ---------------------------------------------------------------- following a run


def read_metrics(run: Run | str | Path) -> list[dict]:
    """The records of metrics.jsonl so far; a last line still being written is left out."""
    folder = run.path if isinstance(run, Run) else Path(run)
    try:
        text = (folder / METRICS_FILE).read_text()
    except FileNotFoundError:
        return []
    records = []
    for line in text.split("\n")[:-1]:  # the part after the last newline is incomplete
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


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


def progress(run: Run, records: list[dict]) -> Progress:
    """Progress from the latest record; the ETA extrapolates the wall time per epoch so far."""
    if not records:
        return Progress(0.0, run.epochs, None)
    last = records[-1]
    epoch, wall = float(last["epoch"]), float(last.get("wall_time", 0.0))
    eta = wall / epoch * max(run.epochs - epoch, 0.0) if epoch > 0 and run.status is Status.RUNNING else None
    return Progress(epoch, run.epochs, eta)
