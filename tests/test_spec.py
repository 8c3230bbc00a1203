"""The run spec: the one declaration that the CLI, the Train form, job files and checkpoints follow."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from tests.colour_model import make_colour_folder
from vae_core import (
    VAE,
    CheckpointError,
    DataSpec,
    RunSpec,
    TrainConfig,
    VAEConfig,
    load_checkpoint,
    model,
    save_checkpoint,
)
from vae_core.checkpoint import MODEL_FILE, read_spec, spec_from_v1
from vae_core.cli import build_parser, run_spec
from vae_core.spec import SECTIONS, FormField, Runtime, form_fields, to_argv

ROOT = Path(__file__).resolve().parent.parent
# checkpoints/train_all.sh: the shipped mnist-best recipe
MNIST_BEST = ["--dataset", "mnist", "--arch", "mlp", "--hidden", "512", "512", "--latent-dim", "32",
              "--epochs", "300", "--lr", "1e-3", "--lr-schedule", "cosine", "--min-lr", "1e-5",
              "--warmup-epochs", "10"]  # fmt: skip
# Every option away from its default.
EVERY_OPTION = ["--dataset", "folder", "--binarize", "none", "--image-size", "32", "--channels", "3",
                "--test-fraction", "0.2", "--split-seed", "3", "--likelihood", "logistic",
                "--arch", "conv", "--latent-dim", "3",
                "--hidden", "8", "16", "--activation", "elu", "--epochs", "7", "--batch-size", "32",
                "--lr", "0.003", "--lr-schedule", "cosine", "--min-lr", "1e-05", "--beta", "2.5",
                "--warmup-epochs", "1.5", "--seed", "4", "--log-every", "5",
                "--precision", "bf16", "--lr-warmup-epochs", "0.5", "--preset", "fast"]  # fmt: skip
RUNTIME_FLAGS = {"--data-dir", "--device", "--threads", "--timelapse", "--out", "--resume", "--help", "-h"}


def parse(argv: list[str]) -> RunSpec:
    """The spec `python -m vae_core train` makes of these flags."""
    return run_spec(build_parser().parse_args(["train", "--out", "unused", *argv]))


def train_flags() -> set[str]:
    train = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    return {s for action in train._actions for s in action.option_strings}


@pytest.mark.parametrize(
    "argv", [[], MNIST_BEST, EVERY_OPTION], ids=["defaults", "mnist-best", "every-option"]
)
def test_flags_round_trip_through_the_spec(argv: list[str]) -> None:
    """argv -> RunSpec -> argv -> RunSpec gives the same spec, and the flags of a spec name every option."""
    spec = parse(argv)
    assert parse(to_argv(spec)) == spec
    assert {a for a in to_argv(spec) if a.startswith("--")} == train_flags() - RUNTIME_FLAGS


def test_every_option_is_a_flag_and_every_flag_an_option() -> None:
    """The train command's flags are the spec's options plus the runtime's; only image_shape and a
    folder's path, set by the data, have no flag."""
    every = parse(EVERY_OPTION)
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            if f.name not in ("image_shape", "folder"):
                assert getattr(getattr(every, section), f.name) != f.default, f"{section}.{f.name}"
    runtime = {"--" + f.name.replace("_", "-") for f in fields(Runtime)}
    assert runtime | {"--out", "--resume", "--help", "-h"} == RUNTIME_FLAGS
    assert {a for a in EVERY_OPTION if a.startswith("--")} == train_flags() - RUNTIME_FLAGS


def test_dict_round_trip_is_typed_and_strict() -> None:
    """to_dict is plain JSON data; from_dict gives the equal spec back (tuples again), fills missing
    options with their defaults, and refuses unknown keys by name."""
    spec = parse(EVERY_OPTION)
    d = json.loads(json.dumps(spec.to_dict()))
    assert RunSpec.from_dict(d) == spec and RunSpec.from_dict(d).model.hidden == (8, 16)
    assert RunSpec.from_dict({"train": {"epochs": 3}}) == RunSpec(train=TrainConfig(epochs=3))
    with pytest.raises(ValueError, match=r"Unknown key\(s\) in the train section: 'epoch', 'speed'"):
        RunSpec.from_dict({"train": {"epoch": 3, "speed": 1}})
    with pytest.raises(ValueError, match=r"Unknown key\(s\) in the run spec: 'optim'"):
        RunSpec.from_dict({"optim": {}})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrainConfig(epochs=0), "epochs must be between 1 and 100000, got 0"),
        (lambda: TrainConfig(seed=-1), "seed must be between 0 and 2147483647, got -1"),
        (lambda: TrainConfig(lr=0.0), r"lr must be between 1e-08 and 1e\+06, got 0.0"),
        (lambda: TrainConfig(beta=float("nan")), "beta must be a finite number, got nan"),
        (lambda: TrainConfig(batch_size=2.5), "batch_size must be a whole number, got 2.5"),
        (lambda: TrainConfig(epochs=True), "epochs must be a number, got True"),
        (lambda: VAEConfig(latent_dim=10**9), "latent_dim must be between 1 and 512, got 1000000000"),
        (lambda: VAEConfig(hidden=(64,) * 9), "hidden takes 1 to 8 numbers, got 9"),
        (lambda: VAEConfig(hidden=()), "hidden takes 1 to 8 numbers, got 0"),
        (lambda: VAEConfig(activation="swish"), "activation must be one of"),
        (
            lambda: DataSpec(name="cifar"),
            r"dataset must be one of \('mnist', 'fashion-mnist', 'kmnist', 'cifar10', 'folder'\)",
        ),
        (lambda: Runtime(threads=0), "threads must be between 1 and 1024, got 0"),
    ],
)
def test_range_errors_name_the_option_the_value_and_the_range(make, message: str) -> None:
    """A value outside its declared choices or range is a ValueError saying which, what and where."""
    with pytest.raises(ValueError, match=message):
        make()


def test_every_activation_choice_builds_a_model() -> None:
    """The spec's activation choices are exactly the modules the model builds."""
    assert tuple(model.ACTIVATIONS) == next(f.option.choices for f in form_fields() if f.name == "activation")


def test_checkpoint_spec_round_trips_typed(tmp_path: Path) -> None:
    """A checkpoint hands its spec back as an equal RunSpec, not a dict."""
    spec = parse(EVERY_OPTION)
    save_checkpoint(tmp_path / "ck", VAE(spec.model), spec=spec, metrics={}, epoch=0, step=0)
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.meta.spec == spec and isinstance(loaded.meta.spec, RunSpec)
    assert loaded.meta.dataset == "folder" and read_spec(tmp_path / "ck") == spec
    with pytest.raises(ValueError, match="not the model's config"):
        save_checkpoint(tmp_path / "x", VAE(VAEConfig()), spec=spec, metrics={}, epoch=0, step=0)


def v1_checkpoint(path: Path, model_config: dict, dataset: str, train_config: dict) -> VAE:
    net = VAE(VAEConfig(**model_config))
    path.mkdir()
    torch.save(
        {"format_version": 1, "model_config": model_config, "dataset": dataset, "train_config": train_config,
         "metrics": {"elbo": -90.0}, "epoch": 4, "step": 40, "state_dict": net.state_dict()},
        path / MODEL_FILE,
    )  # fmt: skip
    return net


def test_version_1_checkpoints_migrate_to_a_spec(tmp_path: Path) -> None:
    """A version-1 checkpoint (dataset and binarisation inside train_config, no precision) loads with
    the equivalent spec and its weights; an invalid v1 config is a CheckpointError."""
    config = {
        "arch": "mlp",
        "latent_dim": 2,
        "hidden": (16, 8),
        "activation": "tanh",
        "image_shape": (1, 28, 28),
    }
    train = {"dataset": "fashion-mnist", "epochs": 40, "batch_size": 128, "lr": 0.001,
             "lr_schedule": "cosine", "min_lr": 1e-05, "beta": 1.0, "warmup_epochs": 5.0,
             "binarize": "none", "seed": 0, "log_every": 20}  # fmt: skip
    net = v1_checkpoint(tmp_path / "old", config, "fashion-mnist", train)
    loaded = load_checkpoint(tmp_path / "old")
    expected = RunSpec(
        data=DataSpec("fashion-mnist", "none"),
        model=VAEConfig("mlp", 2, (16, 8), "tanh"),
        train=TrainConfig(epochs=40, lr_schedule="cosine", min_lr=1e-5, warmup_epochs=5.0),
    )
    assert loaded.meta.spec == expected == spec_from_v1(config, "fashion-mnist", train)
    assert loaded.meta.epoch == 4 and loaded.meta.metrics == {"elbo": -90.0}
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=True)
    )
    v1_checkpoint(tmp_path / "bad", config, "mnist", train | {"epochs": 0})
    with pytest.raises(CheckpointError, match="version-1 config that is not valid: epochs must be"):
        load_checkpoint(tmp_path / "bad")


# ---------------------------------------------------------------- the Train form


def set_widget(at: AppTest, f: FormField, value: object) -> None:
    """Set the form's widget of one spec option, found by its key."""
    key = f"t_{f.key}"
    if f.option.choices:
        (at.radio if len(f.option.choices) <= 3 else at.selectbox)(key=key).set_value(value)
    elif f.kind is tuple:
        at.text_input(key=key).set_value(" ".join(map(str, value)))
    else:
        at.number_input(key=key).set_value(value)


@pytest.mark.parametrize("argv", [MNIST_BEST, EVERY_OPTION], ids=["mnist-best", "every-option"])
def test_the_form_starts_every_run_the_cli_can(
    tmp_path: Path, launched: list[list[str]], argv: list[str]
) -> None:
    """Every spec option has a widget; set to a recipe, the form starts a run whose job file holds
    the spec the CLI makes of the same flags, and whose trainer flags parse back to it."""
    expected = parse(argv)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("pages/7_Train.py").run()
    for f in form_fields():
        set_widget(at, f, getattr(getattr(expected, f.section), f.name))
    at.text_input(key="t_name").set_value("recipe")
    if expected.data.name == "folder":  # the folder dataset is the data folder given under Advanced
        make_colour_folder(tmp_path / "images")  # the page imports it before the run starts
        at.text_input(key="t_data_dir").set_value(str(tmp_path / "images"))
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    job = json.loads((tmp_path / "runs" / "recipe" / "job.json").read_text())
    stored = RunSpec.from_dict(job["spec"])
    if expected.data.name == "folder":  # the job names the images it trains on
        assert stored.data.folder == str(tmp_path / "images")
        stored = stored.with_values({"data": {"folder": ""}})
    assert stored == expected
    assert parse(launched[0]) == expected  # the flags the trainer gets, runtime ones included
