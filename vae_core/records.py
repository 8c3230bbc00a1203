"""What a training run tells its readers: its metrics log, one typed record per line, and its outcome.

    NAME/metrics.jsonl   a StepRecord every log_every steps, an EpochRecord after every epoch (or stop)
    NAME/outcome.json    an Outcome, written once when the trainer ends, however it ends

The trainer is the one writer (`append_record`, `write_outcome`); the job manager, the Train page
and the tools read through `read_metrics` and `read_outcome`, never by parsing the trainer's log.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from vae_core.atomic import atomic_write_text

METRICS_FILE = "metrics.jsonl"
OUTCOME_FILE = "outcome.json"
OUTCOMES = ("finished", "stopped", "diverged", "failed")


@dataclass(frozen=True)
class StepRecord:
    """The training terms averaged over the steps since the last record (nats / image)."""

    step: int
    epoch: float  # fractional: epochs done, plus the fraction of the current one
    elbo: float
    recon: float
    kl: float
    beta: float
    lr: float
    samples_per_s: float
    wall_time: float  # seconds of training so far, across resumes
    event: str = "step"


@dataclass(frozen=True)
class EpochRecord:
    """The test-set terms after an epoch ("epoch") or at a stop ("interrupted")."""

    step: int
    epoch: float
    test_elbo: float | None
    test_recon: float | None
    test_kl: float | None
    active_units: int | None
    beta: float
    lr: float
    wall_time: float
    event: str = "epoch"


Record = StepRecord | EpochRecord
_TYPES: dict[str, type[StepRecord] | type[EpochRecord]] = {
    "step": StepRecord,
    "epoch": EpochRecord,
    "interrupted": EpochRecord,
}


def append_record(folder: Path, record: Record) -> None:
    """Append one record as one JSON line and flush it, so another process can follow the file."""
    with (Path(folder) / METRICS_FILE).open("a") as f:
        f.write(json.dumps(asdict(record)) + "\n")
        f.flush()


def _record(line: str) -> Record | None:
    try:
        d = json.loads(line)
        cls = _TYPES[d["event"]]
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})
    except (json.JSONDecodeError, KeyError, TypeError):
        return None


def read_metrics(folder: str | Path) -> list[Record]:
    """The records of a run so far; a last line still being written, or a foreign one, is left out."""
    try:
        text = (Path(folder) / METRICS_FILE).read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")[:-1]  # the part after the last newline is incomplete
    return [r for r in map(_record, lines) if r is not None]


def truncate_metrics(folder: str | Path, step: int) -> None:
    """Keep the records up to `step` (a resumed run logs the later ones again), atomically."""
    file = Path(folder) / METRICS_FILE
    if not file.is_file():
        return
    kept = [r for r in read_metrics(folder) if r.step <= step]
    atomic_write_text(file, "".join(json.dumps(asdict(r)) + "\n" for r in kept))


@dataclass(frozen=True)
class Outcome:
    """How a trainer ended: finished, stopped (SIGTERM/SIGINT), diverged or failed, and where."""

    status: str
    message: str = ""
    epoch: int = 0  # completed epochs at the end
    step: int = 0

    def __post_init__(self) -> None:
        if self.status not in OUTCOMES:
            raise ValueError(f"status must be one of {OUTCOMES}, got {self.status!r}")


def write_outcome(folder: str | Path, outcome: Outcome) -> None:
    atomic_write_text(Path(folder) / OUTCOME_FILE, json.dumps(asdict(outcome), indent=1))


def clear_outcome(folder: str | Path) -> None:
    """Forget a previous ending, before a run (re)starts in `folder`."""
    (Path(folder) / OUTCOME_FILE).unlink(missing_ok=True)


def read_outcome(folder: str | Path) -> Outcome | None:
    """The run's outcome, None while it has none; an unreadable file reads as a failure that says so."""
    file = Path(folder) / OUTCOME_FILE
    try:
        d = json.loads(file.read_text())
        return Outcome(**d)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        return Outcome("failed", f"{file} is unreadable: {e}")
