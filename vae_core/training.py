"""Training: `fit` maximises the ELBO (with optional β and KL warm-up), logs, checkpoints, resumes.

The training set lives on the device as one uint8 tensor; each batch is sliced by a per-epoch
permutation and converted (and dynamically binarised) on the fly. Progress is reported through a
callback that receives the same records that go to `metrics.jsonl`, so the trainer knows nothing
about terminals or web pages.

Under torchrun every rank takes its share of each global batch (DistributedDataParallel averages
the gradients), and rank 0 alone logs and writes the checkpoint, in the single-process format.
"""

from __future__ import annotations

import errno
import gc
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vae_core import budget, fast
from vae_core.atomic import DiskFullError
from vae_core.checkpoint import (
    METRICS_FILE,
    STATE_FILE,
    CheckpointError,
    atomic_save,
    model_file,
    read_checkpoint,
    read_spec,
    safe_load,
    save_checkpoint,
)
from vae_core.data import FOLDER, DatasetError, ImageSet, load_images, to_float
from vae_core.device import pick_device
from vae_core.distributed import World, join, leave
from vae_core.evaluation import eval_inputs, summarize
from vae_core.model import VAE
from vae_core.records import EpochRecord, Record, StepRecord, append_record, truncate_metrics
from vae_core.spec import LR_SCHEDULES as LR_SCHEDULES  # re-exported: the options' choices
from vae_core.spec import PRECISIONS as PRECISIONS
from vae_core.spec import DataSpec, RunSpec
from vae_core.spec import TrainConfig as TrainConfig

Callback = Callable[[Record], None]
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # the errors vae_core.atomic reports as a full disk
EpochHook = Callable[[VAE, int], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, message: str, *, epoch: int = 0, step: int = 0) -> None:
        super().__init__(message)
        self.epoch, self.step = epoch, step


@dataclass
class Position:
    """Where training stands: completed epochs, batches into the current one, total steps, seconds."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    wall_time: float = 0.0


@dataclass
class FitResult:
    model: VAE
    position: Position
    interrupted: bool
    metrics: dict


class _StopFlag:
    """Set by SIGINT/SIGTERM: training finishes its step, saves and returns."""

    def __init__(self) -> None:
        self.stop = False

    def __call__(self, signum: int, frame: object) -> None:
        self.stop = True


@contextmanager
def _graceful_stop() -> Iterator[_StopFlag]:
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signals can only be handled on the main thread
        return
    previous = {s: signal.signal(s, flag) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of the training set for one epoch: a function of (seed, epoch) alone."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def _save(out: Path, trainer: _Trainer) -> None:
    """Training state first, then the model file, each atomically. Both carry the step, so a crash
    between the two writes (a torn pair) is caught when resuming."""
    atomic_save(
        {
            "position": asdict(trainer.pos),
            "optimizer": trainer.opt.state_dict(),
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        out / STATE_FILE,
    )
    save_checkpoint(
        out, trainer.model, spec=trainer.spec, metrics=trainer.metrics, epoch=trainer.pos.epoch,
        step=trainer.pos.step,
    )  # fmt: skip


def _check_state(path: Path, state: dict, opt: torch.optim.Optimizer) -> Position:
    """Where a training state stands, after checking that it is one `_save` wrote for this model:
    the keys it needs, a position of counts, and optimizer moments shaped like the parameters (a
    mismatch would otherwise surface as a shape error inside the first optimizer step)."""

    def refuse(why: str) -> CheckpointError:
        return CheckpointError(f"Cannot resume from {path}: {why}. Start a new run to train further.", path)

    missing = [key for key in ("position", "optimizer", "cpu_rng", "cuda_rng") if key not in state]
    if missing:
        raise refuse(f"its state has no {', '.join(missing)}")
    fields = Position.__dataclass_fields__
    position = state["position"]
    if not isinstance(position, dict) or set(position) != set(fields):
        raise refuse(f"its position must have exactly the fields {sorted(fields)}")
    if not all(isinstance(position[f], (int, float)) and position[f] >= 0 for f in fields):
        raise refuse(f"its position holds negative or non-numeric counts ({position})")
    if not isinstance(state["cpu_rng"], torch.Tensor) or state["cpu_rng"].dtype != torch.uint8:
        raise refuse("its random-number state is not a byte tensor")
    cuda = state["cuda_rng"]
    if not isinstance(cuda, (list, tuple)) or not all(
        isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda
    ):
        raise refuse("its CUDA random-number states are not byte tensors")
    saved, params = state["optimizer"], [p for group in opt.param_groups for p in group["params"]]
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    moments = saved.get("state") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or not isinstance(moments, dict):
        raise refuse("its optimizer state is not an optimizer's state_dict")
    ids = [i for group in groups if isinstance(group, dict) for i in group.get("params", [])]
    if len(ids) != len(params):
        raise refuse(f"its optimizer holds {len(ids)} parameters, the model {len(params)}")
    for i, param in zip(ids, params, strict=True):
        entry = moments.get(i, {})
        if not isinstance(entry, dict):
            raise refuse(f"its optimizer's state of parameter {i} is not a dict of moments")
        for name, moment in entry.items():
            if name != "step" and (not isinstance(moment, torch.Tensor) or moment.shape != param.shape):
                shape = tuple(moment.shape) if isinstance(moment, torch.Tensor) else type(moment).__name__
                raise refuse(f"its optimizer's {name} of parameter {i} is {shape}, not {tuple(param.shape)}")
    return Position(**{f: type(getattr(Position, f))(position[f]) for f in fields})


def _restore(out: Path, model: VAE, opt: torch.optim.Optimizer) -> tuple[Position, dict]:
    ckpt = read_checkpoint(out)
    state = safe_load(out / STATE_FILE)
    position = _check_state(out / STATE_FILE, state, opt)
    if position.step != ckpt.get("step"):
        raise CheckpointError(
            f"Cannot resume {out}: {STATE_FILE} is at step {position.step} but {model_file(out).name} at "
            f"step {ckpt.get('step')}, so the pair is torn (a crash between their writes). The model file "
            f"still loads for exploring; start a new run to train further."
        )
    model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["cpu_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return position, ckpt["metrics"]


def resume_spec(out: str | Path, epochs: int | None = None) -> RunSpec:
    """The spec stored in a checkpoint, optionally with a new epoch total."""
    spec = read_spec(out)
    return spec.with_values({"train": {"epochs": epochs}}) if epochs else spec


class _Objective(nn.Module):
    """The model with its ELBO terms as `forward`, so DistributedDataParallel can wrap it. Under
    bf16 precision, autocast runs the layers' products in bfloat16; the terms are scored in float32."""

    def __init__(self, model: VAE, products: torch.dtype) -> None:
        super().__init__()
        self.model, self.products = model, products

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mixed = self.products != x.dtype
        with torch.autocast(x.device.type, dtype=self.products, enabled=mixed):
            terms = fast.elbo_terms(self.model, x)
        return terms.recon, terms.kl


class _Meter:
    """Running sums of the loss terms on the device, summed over ranks when read."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(2, device=device)  # recon, kl
        self.count = 0

    def add(self, recon: torch.Tensor, kl: torch.Tensor) -> None:
        self.sums += torch.stack([recon.detach().sum(), kl.detach().sum()])
        self.count += recon.numel()

    def read(self, world: World) -> dict:
        totals = torch.cat([self.sums, torch.tensor([float(self.count)], device=self.sums.device)])
        recon, kl, n = world.sum(totals).tolist()
        self.sums.zero_()
        self.count = 0
        n = max(n, 1.0)
        return {"elbo": -(recon + kl) / n, "recon": recon / n, "kl": kl / n}


class _Trainer:
    """One training run: the model, its optimizer, where it stands, and how it reports."""

    def __init__(self, model: VAE, spec: RunSpec, out: Path, world: World) -> None:
        self.model, self.spec, self.config, self.out, self.world = model, spec, spec.train, out, world
        config = spec.train
        self.device = model.device
        # The fused kernel updates each tensor in one pass: 20% faster steps on CPU than the for-loop.
        fused = self.device.type in ("cpu", "cuda")
        self.opt = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused or None)
        # ReLU MLPs get their gradient written out: 10-17% faster steps on this CPU than autograd's
        # (bench/step_speed.py). DistributedDataParallel needs autograd's hooks to average gradients.
        explicit = fast.writes_out_gradient(model) and not world.distributed
        self.backprop = fast.MLPBackprop(model, config.products) if explicit else None
        objective = None if explicit else _Objective(model, config.products)  # the autograd path alone
        self.objective = DistributedDataParallel(objective) if world.distributed else objective
        self.pos, self.metrics = Position(), {}
        self.meter = _Meter(self.device)
        self.callback: Callback | None = None
        self.on_epoch: EpochHook | None = None
        self.interrupted = False

    def restore(self) -> None:
        self.pos, self.metrics = _restore(self.out, self.model, self.opt)
        if self.world.is_main:  # records past the checkpoint are logged again from here
            truncate_metrics(self.out, self.pos.step)

    def run(self, images: torch.Tensor, test_x: torch.Tensor) -> FitResult:
        """Train until the configured epoch total, or until SIGINT/SIGTERM."""
        if self.world.distributed:  # every rank binarises and samples with noise of its own
            torch.manual_seed(self.config.seed * 1_000_003 + 7919 * (self.world.rank + 1) + self.pos.step)
        self.out.mkdir(parents=True, exist_ok=True)
        self.clock = _Clock(self.pos)
        with _graceful_stop() as flag:
            while self.pos.epoch < self.config.epochs and not self.interrupted:
                self.train_epoch(images, flag)
                self.finish_epoch(test_x)
        if self.world.distributed:
            # Free DDP's reducer while the process group still exists, and let no rank tear the
            # group down while another still uses it: either can abort a process at exit.
            self.objective = None
            gc.collect()
            self.world.barrier()
        return FitResult(self.model.eval(), self.pos, self.interrupted, self.metrics)

    def steps_per_epoch(self, n: int) -> int:
        # Under DDP every rank needs a share of every batch: the last, partial batch is dropped.
        b = self.config.batch_size
        return n // b if self.world.distributed else math.ceil(n / b)

    def train_epoch(self, images: torch.Tensor, flag: _StopFlag) -> None:
        config, pos, world = self.config, self.pos, self.world
        self.model.train()
        self.steps = self.steps_per_epoch(len(images))
        order = epoch_order(len(images), config.seed, pos.epoch).to(self.device)
        self.follow_schedule()  # a run stopped after an epoch's last step resumes with no step left
        while pos.batch < self.steps and not self.interrupted:
            self.follow_schedule()
            batch = order[pos.batch * config.batch_size : (pos.batch + 1) * config.batch_size]
            # index_select gathers the rows 8x faster than images[...] (5 against 40 us a batch here)
            rows = images.index_select(0, batch[world.rank :: world.size])
            self.step(to_float(rows, self.spec.data.binarize))
            pos.batch, pos.step = pos.batch + 1, pos.step + 1
            at_log = pos.step % config.log_every == 0
            # Ranks must stop at the same step: under DDP they agree at each log step.
            self.interrupted = (
                world.any(flag.stop, self.device) if world.distributed and at_log else flag.stop
            )
            if at_log or self.interrupted:
                self.log_step()
        if not self.interrupted:
            pos.epoch, pos.batch = pos.epoch + 1, 0

    def follow_schedule(self) -> None:
        """Set β and the learning rate for where the run stands."""
        progress = self.pos.epoch + self.pos.batch / self.steps
        self.beta, self.lr = self.config.beta_at(progress), self.config.lr_at(progress)

    def step(self, x: torch.Tensor) -> None:
        for group in self.opt.param_groups:
            group["lr"] = self.lr
        if self.backprop:
            recon, kl = self.backprop(x, self.beta)
        else:
            recon, kl = self.objective(x)
            loss = (recon + self.beta * kl).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        self.opt.step()
        self.meter.add(recon, kl)

    def log_step(self) -> None:
        record = self.read_meter()
        rate = self.clock.samples_per_s(self.pos.step, self.config.batch_size)
        self.emit(
            StepRecord(
                step=self.pos.step, epoch=self.pos.epoch + self.pos.batch / self.steps, **record,
                beta=self.beta, lr=self.lr, samples_per_s=rate, wall_time=self.clock.wall_time(),
            )
        )  # fmt: skip

    def finish_epoch(self, test_x: torch.Tensor) -> None:
        """After an epoch (or an interruption): measure on the test set, save, report."""
        self.read_meter()
        last = self.interrupted or self.pos.epoch == self.config.epochs  # the card's fingerprint
        metrics = summarize(self.model.eval(), test_x, check=last) if self.world.is_main else {}
        self.pos.wall_time = self.clock.wall_time()  # an epoch's time includes its evaluation
        if self.world.is_main:
            self.metrics = metrics | self.device_and_time()
            _check_finite(self.metrics, self.pos, self.out)
            _save(self.out, self)
        self.world.barrier()
        m, pos = self.metrics, self.pos
        self.emit(
            EpochRecord(
                step=pos.step, epoch=pos.epoch + pos.batch / self.steps, test_elbo=m.get("elbo"),
                test_recon=m.get("recon"), test_kl=m.get("kl"), active_units=m.get("active_units"),
                beta=self.beta, lr=self.lr, wall_time=pos.wall_time,
                event="interrupted" if self.interrupted else "epoch",
            )
        )  # fmt: skip
        if self.on_epoch and self.world.is_main and not self.interrupted:
            self.on_epoch(self.model.eval(), pos.epoch)

    def device_and_time(self) -> dict:
        world = self.world
        device = f"{self.device.type} x{world.size}" if world.distributed else str(self.device)
        return {"device": device, "wall_time": self.pos.wall_time}

    def emit(self, record: Record) -> None:
        if self.world.is_main:
            _append(self.out, record)
            if self.callback:
                self.callback(record)

    def read_meter(self) -> dict:
        record = self.meter.read(self.world)
        _check_finite(record, self.pos, self.out)
        return record


def _append(out: Path, record: Record) -> None:
    """Append a record to the metrics log; a full disk is a DiskFullError naming the log, as for
    the atomic writes (a resume truncates the log to its checkpoint, dropping a half-written line)."""
    try:
        append_record(out, record)
    except OSError as e:
        if e.errno not in DISK_FULL or isinstance(e, DiskFullError):
            raise
        log = out / METRICS_FILE
        raise DiskFullError(
            e.errno, f"The disk is full: could not append to {log} (its records so far are kept)"
        ) from e


class _Clock:
    """Wall time across resumes, and throughput since the last reading."""

    def __init__(self, pos: Position) -> None:
        self.start = time.perf_counter() - pos.wall_time
        self.tick, self.tick_step = time.perf_counter(), pos.step

    def wall_time(self) -> float:
        return time.perf_counter() - self.start

    def samples_per_s(self, step: int, batch_size: int) -> float:
        now = time.perf_counter()
        rate = (step - self.tick_step) * batch_size / max(now - self.tick, 1e-9)
        self.tick, self.tick_step = now, step
        return rate


@dataclass(frozen=True)
class RunData:
    """The two splits a run trains and tests on, and a folder's import report (None for named sets)."""

    train: ImageSet
    test: ImageSet
    report: object | None = None  # vae_core.folder.ImportReport


def with_folder(spec: RunSpec, data_dir: str | Path | None) -> RunSpec:
    """For --dataset folder, the spec with --data-dir's absolute path as its data (DataSpec.folder),
    so the checkpoint names the images it was trained on; other specs as they are."""
    if spec.data.name != FOLDER or spec.data.folder or data_dir is None:
        return spec
    return spec.with_values({"data": {"folder": str(Path(data_dir).resolve())}})


def load_data(
    data: DataSpec, data_dir: str | Path | None = None, progress: Callable[[int, int], None] | None = None
) -> RunData:
    """Both splits of a spec's data: a named set (from `data_dir`, or found), or its folder (imported
    once, `progress(done, total)` while decoding; `data.folder`, else `data_dir`)."""
    if data.name != FOLDER:
        return RunData(load_images(data.name, "train", data_dir), load_images(data.name, "test", data_dir))
    from vae_core.folder import import_folder  # imported late: Pillow, only for folders

    root = data.folder or data_dir
    if root is None:
        raise DatasetError(f"The {FOLDER} dataset needs a folder of images: pass --data-dir DIR.")
    imported = import_folder(root, progress=progress, **data.folder_options())
    return RunData(imported.train, imported.test, imported.report)


def load_test(data: DataSpec, data_dir: str | Path | None = None) -> ImageSet:
    """The test split of a spec's data (a folder's from its cache when imported before)."""
    if data.name != FOLDER:
        return load_images(data.name, "test", data_dir)
    return load_data(data, data_dir).test


def shaped_for(spec: RunSpec, images: ImageSet) -> RunSpec:
    """The spec with the model's image_shape set from the data: (C, H, W) of its images."""
    shape = tuple(images.images.shape[1:])
    return spec if spec.model.image_shape == shape else spec.with_values({"model": {"image_shape": shape}})


def fit(
    spec: RunSpec,
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    train_set: ImageSet | None = None,
    test_set: ImageSet | None = None,
    device: str = "auto",
    resume: bool = False,
    callback: Callback | None = None,
    on_epoch: EpochHook | None = None,
) -> FitResult:
    """Train a VAE and write its checkpoint folder `out`; returns the model and how it ended.

    The callback receives each record written to metrics.jsonl: a `StepRecord` every `log_every`
    steps and an `EpochRecord` with test metrics after every epoch; `on_epoch`
    gets the model (in eval mode) and the epoch number after each epoch's checkpoint. Under
    torchrun, only rank 0 writes, calls back and returns the metrics.
    """
    out = Path(out)
    check_out(out, resume)
    budget.check(spec)  # before anything is built or loaded: BudgetError states the size and the limit
    spec = with_folder(spec, data_dir)
    if train_set is None or test_set is None:
        data = load_data(spec.data, data_dir)
        train_set, test_set = train_set or data.train, test_set or data.test
    if (shaped := shaped_for(spec, train_set)) != spec:
        spec = shaped
        budget.check(spec)  # again for the data's own image size
    world, dev = join(pick_device(device))
    try:
        torch.manual_seed(spec.train.seed)
        trainer = _Trainer(VAE(spec.model).to(dev), spec, out, world)
        trainer.callback, trainer.on_epoch = callback, on_epoch
        if resume:
            trainer.restore()
        return trainer.run(train_set.images.to(dev), eval_inputs(test_set, spec.data.binarize).to(dev))
    finally:
        leave(world)


def check_out(out: str | Path, resume: bool) -> None:
    """Refuse to train over an existing checkpoint unless resuming it."""
    if not resume and model_file(out).exists():
        raise CheckpointError(
            f"{out} already holds a checkpoint: pass --resume to continue it, or pick another --out"
        )


def _check_finite(record: dict, pos: Position, out: Path) -> None:
    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise TrainingDiverged(
            f"The loss became {record[bad[0]]} ({', '.join(bad)}) at step {pos.step}, epoch {pos.epoch + 1}. "
            f"Training stopped; the last good checkpoint (if any) is kept in {out}. "
            f"Try a lower --lr or a KL warm-up (--warmup-epochs).",
            epoch=pos.epoch,
            step=pos.step,
        )
