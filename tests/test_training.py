"""Training: learning, logs, reproducibility, exact resume, graceful stop, and divergence."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from vae_core import (
    CheckpointError,
    DataSpec,
    ImageSet,
    RunSpec,
    TrainConfig,
    TrainingDiverged,
    VAEConfig,
    fit,
    load_checkpoint,
    read_metrics,
)
from vae_core.checkpoint import METRICS_FILE, STATE_FILE
from vae_core.records import EpochRecord, StepRecord

MODEL = VAEConfig(arch="mlp", latent_dim=2, hidden=(32,))


def run(out: Path, data: tuple[ImageSet, ImageSet], **overrides: object) -> object:
    options = {"epochs": 2, "batch_size": 64, "log_every": 2, **overrides}
    resume = bool(options.pop("resume", False))
    callback = options.pop("callback", None)
    on_epoch = options.pop("on_epoch", None)
    model = options.pop("model", MODEL)
    data_spec = options.pop("data", DataSpec())
    train, test = data
    return fit(
        RunSpec(data=data_spec, model=model, train=TrainConfig(**options)),
        out,
        train_set=train,
        test_set=test,
        device="cpu",
        resume=resume,
        callback=callback,
        on_epoch=on_epoch,
    )


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_training_improves_the_test_elbo_and_logs_jsonl(tmp_path: Path, tiny_data: tuple) -> None:
    """The test ELBO rises over epochs; metrics.jsonl holds step and epoch records with all fields."""
    records: list[dict] = []
    run(tmp_path / "ck", tiny_data, epochs=4, callback=records.append)
    lines = [json.loads(line) for line in (tmp_path / "ck" / METRICS_FILE).read_text().splitlines()]
    assert read_metrics(tmp_path / "ck") == records and len(lines) == len(records)
    assert all(isinstance(r, StepRecord | EpochRecord) for r in records)
    steps = [r for r in lines if r["event"] == "step"]
    epochs = [r for r in lines if r["event"] == "epoch"]
    assert len(epochs) == 4 and len(steps) == 4 * 8 // 2
    assert {"step", "epoch", "elbo", "recon", "kl", "beta", "lr", "samples_per_s", "wall_time"} <= steps[
        0
    ].keys()
    assert {"test_elbo", "test_recon", "test_kl", "active_units"} <= epochs[0].keys()
    assert epochs[-1]["test_elbo"] > epochs[0]["test_elbo"]
    for r in epochs:
        assert r["test_elbo"] == pytest.approx(-(r["test_recon"] + r["test_kl"]))


def test_checkpoint_carries_config_dataset_and_metrics(tmp_path: Path, tiny_data: tuple) -> None:
    """The written checkpoint loads with its model config, training config, dataset and test metrics."""
    result = run(tmp_path / "ck", tiny_data, beta=0.5)
    model = load_checkpoint(tmp_path / "ck")
    assert model.config == MODEL and model.meta.dataset == "mnist"
    assert model.meta.spec == RunSpec(
        model=MODEL, train=TrainConfig(epochs=2, batch_size=64, log_every=2, beta=0.5)
    )
    assert model.meta.epoch == 2
    assert model.meta.metrics == result.metrics
    assert len(model.meta.metrics["kl_per_dim"]) == 2
    assert sum(model.meta.metrics["kl_per_dim"]) == pytest.approx(model.meta.metrics["kl"], rel=1e-4)
    assert model.meta.metrics["check"]["n"] == 128  # the final card carries its fingerprint


def test_only_the_last_epoch_pays_for_the_fingerprint(tmp_path: Path, tiny_data: tuple) -> None:
    """Epochs before the last save their metrics without the card's fingerprint (it costs 2% of an
    MNIST epoch); the last one has it."""
    saved = []
    run(tmp_path / "ck", tiny_data, on_epoch=lambda *_: saved.append(load_checkpoint(tmp_path / "ck")))
    assert ["check" in model.meta.metrics for model in saved] == [False, True]


def test_an_epochs_wall_time_includes_its_evaluation(
    tmp_path: Path, tiny_data: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each epoch record's wall time is taken after the test-set evaluation, so the time between two
    records (what bench/train_speed.py reports per epoch) counts one evaluation, the first included."""
    import vae_core.training as training

    def slow_summarize(*args: object, **kwargs: object) -> dict:
        time.sleep(0.3)
        return summarize(*args, **kwargs)

    summarize = training.summarize
    monkeypatch.setattr(training, "summarize", slow_summarize)
    records: list[dict] = []
    run(tmp_path / "ck", tiny_data, callback=records.append)
    ends = [0.0] + [r.wall_time for r in records if r.event == "epoch"]
    assert all(b - a >= 0.3 for a, b in itertools.pairwise(ends)), ends
    assert load_checkpoint(tmp_path / "ck").meta.metrics["wall_time"] == ends[-1]


def test_same_seed_same_weights(tmp_path: Path, tiny_data: tuple) -> None:
    """Two runs with one seed give identical weights; another seed gives different ones."""
    a = weights(run(tmp_path / "a", tiny_data).model)
    b = weights(run(tmp_path / "b", tiny_data).model)
    c = weights(run(tmp_path / "c", tiny_data, seed=1).model)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_resume_continues_exactly(tmp_path: Path, tiny_data: tuple) -> None:
    """One epoch plus a resumed second equals two epochs in one go, bit for bit."""
    straight = weights(run(tmp_path / "straight", tiny_data).model)
    run(tmp_path / "split", tiny_data, epochs=1)
    resumed = run(tmp_path / "split", tiny_data, epochs=2, resume=True)
    assert resumed.position.epoch == 2 and resumed.position.step == 16
    assert all(torch.equal(x, y) for x, y in zip(straight, weights(resumed.model), strict=True))


@pytest.mark.parametrize("signal_at", [6, 7], ids=["mid-epoch", "last-step-of-epoch"])
def test_sigint_saves_and_resume_finishes_the_same_run(
    tmp_path: Path, tiny_data: tuple, signal_at: int
) -> None:
    """SIGINT finishes the step, saves a loadable checkpoint and returns; resuming matches a clean run.

    The signal lands while step `signal_at` is logged, so the run stops after the next step: mid-epoch,
    or after the epoch's last step (8), before the epoch is closed, which the resumed run must close."""
    straight = weights(run(tmp_path / "straight", tiny_data).model)

    def interrupt(record: dict) -> None:
        if record.event == "step" and record.step == signal_at:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = run(tmp_path / "ck", tiny_data, log_every=1, callback=interrupt)
    assert stopped.interrupted and stopped.position.step == signal_at + 1
    assert load_checkpoint(tmp_path / "ck").meta.step == stopped.position.step
    resumed = run(tmp_path / "ck", tiny_data, resume=True)
    assert not resumed.interrupted and resumed.position.step == 16
    assert all(torch.equal(x, y) for x, y in zip(straight, weights(resumed.model), strict=True))


@pytest.mark.parametrize("activation", ["relu", "tanh"], ids=["explicit-backprop", "autograd"])
def test_divergence_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, tiny_data: tuple, activation: str
) -> None:
    """A loss that turns NaN or infinite raises TrainingDiverged naming the step; epoch 1's checkpoint
    survives. An absurd learning rate makes the weights overflow within a few steps."""
    model = VAEConfig(arch="mlp", latent_dim=2, hidden=(32,), activation=activation)
    run(tmp_path / "ck", tiny_data, epochs=1, model=model)
    good = (tmp_path / "ck" / "model.pt").read_bytes()
    with pytest.raises(TrainingDiverged, match=r"became -?(nan|inf).*at step 1[0-9].*last good checkpoint"):
        run(tmp_path / "ck", tiny_data, epochs=2, resume=True, model=model, lr=1e6)
    assert (tmp_path / "ck" / "model.pt").read_bytes() == good
    assert load_checkpoint(tmp_path / "ck").meta.epoch == 1


@pytest.mark.parametrize("activation", ["relu", "tanh"], ids=["explicit-backprop", "autograd"])
def test_bf16_precision_learns_as_fp32_does(tmp_path: Path, tiny_data: tuple, activation: str) -> None:
    """Mixed precision trains different weights from the same seed (its products are rounded), but
    as well: the float32 test ELBO after 4 epochs is within half a percent of float32 training's.
    The checkpoint records the precision."""
    model = VAEConfig(arch="mlp", latent_dim=2, hidden=(32,), activation=activation)
    fp32 = run(tmp_path / "fp32", tiny_data, epochs=4, model=model)
    bf16 = run(tmp_path / "bf16", tiny_data, epochs=4, model=model, precision="bf16")
    assert not all(torch.equal(x, y) for x, y in zip(weights(fp32.model), weights(bf16.model), strict=True))
    assert bf16.metrics["elbo"] == pytest.approx(fp32.metrics["elbo"], rel=5e-3)
    assert bf16.metrics["elbo"] > run(tmp_path / "short", tiny_data, epochs=1, model=model).metrics["elbo"]
    assert load_checkpoint(tmp_path / "bf16").meta.spec.train.precision == "bf16"


def test_refuses_to_overwrite_without_resume(tmp_path: Path, tiny_data: tuple) -> None:
    """Training into a folder that already holds a checkpoint is refused unless resuming."""
    run(tmp_path / "ck", tiny_data, epochs=1)
    assert (tmp_path / "ck" / STATE_FILE).exists()
    with pytest.raises(CheckpointError, match=r"--resume"):
        run(tmp_path / "ck", tiny_data, epochs=1)


def test_beta_warmup_and_cosine_schedule() -> None:
    """β ramps linearly to its value over the warm-up; the cosine learning rate goes lr -> min_lr."""
    config = TrainConfig(beta=2.0, warmup_epochs=4, epochs=10, lr=1e-3, lr_schedule="cosine", min_lr=1e-5)
    assert [config.beta_at(e) for e in (0, 1, 4, 9)] == [0.0, 0.5, 2.0, 2.0]
    assert config.lr_at(0) == pytest.approx(1e-3)
    assert config.lr_at(5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert config.lr_at(10) == pytest.approx(1e-5)
    assert TrainConfig().beta_at(0) == 1.0


def test_bad_training_config_is_refused() -> None:
    """Unknown binarisation, schedule or non-positive sizes name the offending value."""
    with pytest.raises(ValueError, match=r"binarize"):
        DataSpec(binarize="static")
    with pytest.raises(ValueError, match=r"batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'bf16'\), got 'fp16'"):
        TrainConfig(precision="fp16")


def test_a_torn_checkpoint_pair_is_refused_on_resume(
    tmp_path: Path, tiny_data: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the model file's write fails after train_state.pt was written (a crash between the two),
    resume refuses the pair, naming both steps, instead of mixing old weights with newer state."""
    import vae_core.training as training

    run(tmp_path / "ck", tiny_data, epochs=1)
    good = (tmp_path / "ck" / "model.pt").read_bytes()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("killed between the two writes")

    monkeypatch.setattr(training, "save_checkpoint", crash)
    with pytest.raises(OSError, match="between the two writes"):
        run(tmp_path / "ck", tiny_data, epochs=2, resume=True)
    monkeypatch.undo()
    assert (tmp_path / "ck" / "model.pt").read_bytes() == good
    with pytest.raises(CheckpointError, match=r"train_state.pt is at step 16 but model.pt at step 8.*torn"):
        run(tmp_path / "ck", tiny_data, epochs=2, resume=True)


def test_resume_drops_records_logged_after_the_checkpoint(tmp_path: Path, tiny_data: tuple) -> None:
    """Step records written after the last checkpoint (a kill before the next save) are dropped on
    resume, so the log holds each step once, in order."""
    run(tmp_path / "ck", tiny_data, epochs=1, log_every=1)
    last = read_metrics(tmp_path / "ck")[-2]
    assert isinstance(last, StepRecord) and last.step == 8
    with (tmp_path / "ck" / METRICS_FILE).open("a") as f:  # logged by a run killed before its save
        for step in (9, 10):
            f.write(json.dumps({**last.__dict__, "step": step}) + "\n")
    run(tmp_path / "ck", tiny_data, epochs=2, log_every=1, resume=True)
    steps = [r.step for r in read_metrics(tmp_path / "ck") if r.event == "step"]
    assert steps == list(range(1, 17))


def _edit_state(folder: Path, edit: Callable[[dict], None]) -> None:
    state = torch.load(folder / STATE_FILE, weights_only=True)
    edit(state)
    torch.save(state, folder / STATE_FILE)


def _shrink_first_moment(state: dict) -> None:
    moments = state["optimizer"]["state"][0]
    moments["exp_avg"] = moments["exp_avg"][:1]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_shrink_first_moment, r"optimizer's exp_avg of parameter 0 is \(1, 784\), not \(\d+, 784\)"),
        (lambda s: s["optimizer"]["param_groups"][0]["params"].pop(), r"holds \d+ parameters, the model \d+"),
        (lambda s: s.pop("cpu_rng"), r"state has no cpu_rng"),
        (lambda s: s["position"].update(step=-3), r"negative or non-numeric counts"),
        (lambda s: s["position"].pop("wall_time"), r"position must have exactly the fields"),
        (lambda s: s.update(optimizer=[1, 2]), r"not an optimizer's state_dict"),
        (lambda s: s["optimizer"]["state"].update({0: [1.0]}), r"state of parameter 0 is not a dict"),
    ],
    ids=[
        "moment-shape",
        "parameter-count",
        "no-rng",
        "negative-step",
        "missing-field",
        "not-a-state",
        "not-moments",
    ],
)
def test_a_damaged_training_state_is_refused_on_resume_with_what_is_wrong(
    tmp_path: Path, tiny_data: tuple, edit: Callable[[dict], None], message: str
) -> None:
    """A train_state.pt that loads but does not fit the model (moments of another shape, a parameter
    short, a key or position field missing) is refused before any step, naming what is wrong, and
    the checkpoint it would have resumed is left as it was."""
    run(tmp_path / "ck", tiny_data, epochs=1)
    _edit_state(tmp_path / "ck", edit)
    good = (tmp_path / "ck" / "model.pt").read_bytes()
    expected = rf"Cannot resume from .*train_state.pt: its .*{message}.*\. Start a new run"
    with pytest.raises(CheckpointError, match=expected):
        run(tmp_path / "ck", tiny_data, epochs=2, resume=True)
    assert (tmp_path / "ck" / "model.pt").read_bytes() == good
