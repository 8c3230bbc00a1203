"""Presets: `--preset fast` fills the options not given from its table, stores itself in the spec,
and survives --resume; the learning-rate warm-up and decay follow their closed forms."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from tests.test_cli import idx_folder
from vae_core import TrainConfig, jobs, load_checkpoint
from vae_core.cli import build_parser, main, run_runtime, run_spec
from vae_core.presets import FAST, multiplies_bf16
from vae_core.records import Outcome, write_outcome
from vae_core.spec import RunSpec

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def parse(argv: list[str]) -> RunSpec:
    """The spec `python -m vae_core train --device cpu` makes of these flags."""
    return run_spec(build_parser().parse_args(["train", "--out", "unused", "--device", "cpu", *argv]))


def fast_precision() -> str:
    return "bf16" if multiplies_bf16(CPU) else "fp32"


@pytest.mark.parametrize(("arch", "binarize"), list(FAST))
def test_fast_fills_every_option_of_its_table(arch: str, binarize: str) -> None:
    """--preset fast sets batch size, schedule, peak and final LR, warm-up, epochs and precision from
    the table of the architecture and binarisation, and leaves the other options at their defaults."""
    spec = parse(["--preset", "fast", "--arch", arch, "--binarize", binarize])
    settings, train = FAST[arch, binarize], spec.train
    assert (train.batch_size, train.lr, train.lr_schedule, train.min_lr, train.epochs) == (
        settings.batch_size, settings.lr, settings.lr_schedule, settings.min_lr, settings.epochs,
    )  # fmt: skip
    assert train.lr_warmup_epochs == settings.lr_warmup_epochs and train.preset == "fast"
    assert train.precision == (fast_precision() if settings.bf16 else "fp32")
    assert (train.beta, train.seed, spec.model.latent_dim) == (1.0, 0, 2)  # not the preset's business


def test_precision_follows_the_hardware() -> None:
    """bf16 exactly where the CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX)."""
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert multiplies_bf16(CPU) == native
    assert multiplies_bf16(torch.device("meta")) is False


def test_explicit_flags_override_the_preset() -> None:
    """Any option given on the command line wins over the preset's value; the rest come from it."""
    spec = parse(["--preset", "fast", "--batch-size", "64", "--lr", "0.002", "--precision", "fp32"])
    settings = FAST["mlp", "dynamic"]
    assert (spec.train.batch_size, spec.train.lr, spec.train.precision) == (64, 0.002, "fp32")
    assert spec.train.epochs == settings.epochs and spec.train.lr_schedule == settings.lr_schedule


def test_no_preset_is_the_defaults() -> None:
    """Without --preset (or with --preset none) the spec is the default spec."""
    assert parse([]) == parse(["--preset", "none"]) == RunSpec()


def test_threads_come_from_the_preset_unless_given() -> None:
    """The runtime takes the preset's CPU threads when --threads is not given, the flag otherwise."""
    args = build_parser().parse_args(["train", "--out", "x", "--device", "cpu", "--preset", "fast"])
    assert run_runtime(args, run_spec(args)).threads == FAST["mlp", "dynamic"].threads
    args = build_parser().parse_args(
        ["train", "--out", "x", "--device", "cpu", "--preset", "fast", "--threads", "1"]
    )
    assert run_runtime(args, run_spec(args)).threads == 1


def test_the_preset_is_stored_in_the_checkpoint_and_survives_resume(tmp_path: Path) -> None:
    """A --preset fast run's checkpoint holds preset 'fast' and the values it set; --resume to a new
    epoch total keeps them, and refuses a changed preset."""
    data, out = idx_folder(tmp_path / "data"), str(tmp_path / "ck")
    base = ["train", "--data-dir", str(data), "--hidden", "16", "--out", out, "--device", "cpu"]
    assert main([*base, "--preset", "fast", "--epochs", "1", "--lr-warmup-epochs", "0.5"]) == 0
    first = load_checkpoint(out).meta.spec
    assert first.train.preset == "fast" and first.train.batch_size == FAST["mlp", "dynamic"].batch_size
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    resumed = load_checkpoint(out).meta
    assert resumed.epoch == 2 and resumed.spec == first.with_values({"train": {"epochs": 2}})
    assert main([*base, "--epochs", "3", "--resume", "--preset", "none"]) == 1
    assert load_checkpoint(out).meta.epoch == 2


def test_warmup_cosine_matches_its_closed_form() -> None:
    """lr_at: 0 at the start, lr t / W during the warm-up, the peak at its end, then
    min_lr + (lr - min_lr)(1 + cos(pi u)) / 2 with u = (t - W) / (epochs - W), min_lr at the end."""
    lr, low, warmup, epochs = 4e-3, 1e-5, 0.5, 4
    config = TrainConfig(lr=lr, min_lr=low, lr_schedule="cosine", lr_warmup_epochs=warmup, epochs=epochs)
    assert config.lr_at(0.0) == 0.0
    assert config.lr_at(0.2) == pytest.approx(lr * 0.2 / warmup)
    assert config.lr_at(warmup) == pytest.approx(lr)
    t = 1.5
    u = (t - warmup) / (epochs - warmup)
    assert config.lr_at(t) == pytest.approx(low + (lr - low) * (1 + math.cos(math.pi * u)) / 2)
    assert config.lr_at((warmup + epochs) / 2) == pytest.approx((lr + low) / 2)
    assert config.lr_at(epochs) == pytest.approx(low)


def test_warmup_linear_and_constant_schedules() -> None:
    """Linear decays straight from the peak to min_lr after the warm-up; constant holds the peak;
    without a warm-up, cosine is the schedule it always was."""
    linear = TrainConfig(lr=1e-2, min_lr=0.0, lr_schedule="linear", lr_warmup_epochs=1.0, epochs=5)
    assert [linear.lr_at(t) for t in (0.5, 1.0, 3.0, 5.0)] == pytest.approx([5e-3, 1e-2, 5e-3, 0.0])
    constant = TrainConfig(lr=1e-3, lr_warmup_epochs=2.0, epochs=5)
    assert [constant.lr_at(t) for t in (1.0, 2.0, 4.9)] == pytest.approx([5e-4, 1e-3, 1e-3])
    cosine = TrainConfig(lr=1e-3, min_lr=1e-5, lr_schedule="cosine", epochs=10)
    assert cosine.lr_at(2.5) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi / 4)))


def test_a_warmup_as_long_as_the_run_is_refused() -> None:
    """A learning-rate warm-up that does not end before the last epoch is a ValueError saying so."""
    with pytest.raises(ValueError, match=r"lr_warmup_epochs \(3\) must be less than epochs \(3\)"):
        TrainConfig(epochs=3, lr_warmup_epochs=3.0)


def test_train_page_starts_a_fast_run_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Train form's preset starts at 'fast'; submitted as it stands, the run's spec has the
    preset's values; an option changed on the form wins over the preset."""
    monkeypatch.setenv("VAE_RUNS_DIR", str(tmp_path / "runs"))
    ended = subprocess.Popen(["true"])
    ended.wait()

    def record(folder: Path, flags: list[str]) -> tuple[int, list[str]]:
        write_outcome(folder, Outcome("stopped", "stopped by the test"))  # a trainer that has ended
        return ended.pid, ["python", "-m", "vae_core", "train", *flags]

    monkeypatch.setattr(jobs, "_launch", record)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("pages/7_Train.py").run()
    assert at.radio(key="t_preset").value == "fast"
    for name, batch in (("quick", None), ("mine", 64)):
        at.text_input(key="t_name").set_value(name)
        at.number_input(key="t_batch_size").set_value(batch or 128)
        next(b for b in at.button if b.label == "Start training").click()
        at.run()
        assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
        spec = RunSpec.from_dict(json.loads((tmp_path / "runs" / name / "job.json").read_text())["spec"])
        settings = FAST[spec.model.arch, spec.data.binarize]
        assert spec.train.preset == "fast" and spec.train.epochs == settings.epochs
        assert spec.train.batch_size == (batch or settings.batch_size)
