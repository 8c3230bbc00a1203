"""The likelihood a run gets when none is asked for: logistic for colour data, bernoulli for grey,
the same from the CLI, the Train form and a job's trainer flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.colour_model import make_colour_folder
from vae_core.cli import build_parser, run_spec
from vae_core.spec import DataSpec, RunSpec, default_likelihood, to_argv

ROOT = Path(__file__).resolve().parent.parent


def parse(argv: list[str]) -> RunSpec:
    """The spec `python -m vae_core train` makes of these flags."""
    return run_spec(build_parser().parse_args(["train", "--out", "unused", *argv]))


@pytest.mark.parametrize(
    ("argv", "likelihood", "binarize"),
    [
        (["--dataset", "folder", "--data-dir", "D"], "logistic", "none"),
        (["--dataset", "folder", "--channels", "3", "--image-size", "32"], "logistic", "none"),
        (["--dataset", "cifar10"], "logistic", "none"),
        (["--dataset", "folder", "--channels", "1"], "bernoulli", "dynamic"),
        (["--dataset", "mnist"], "bernoulli", "dynamic"),
        (["--dataset", "fashion-mnist", "--binarize", "none"], "bernoulli", "none"),
        (["--dataset", "folder", "--likelihood", "bernoulli"], "bernoulli", "dynamic"),
        (["--dataset", "folder", "--likelihood", "bernoulli", "--binarize", "none"], "bernoulli", "none"),
        (["--dataset", "folder", "--binarize", "dynamic"], "bernoulli", "dynamic"),
        (["--dataset", "folder", "--binarize", "none"], "logistic", "none"),
    ],
)
def test_the_cli_defaults_colour_to_logistic_and_grey_to_bernoulli(
    argv: list[str], likelihood: str, binarize: str
) -> None:
    """Without --likelihood, colour data trains with the logistic on 8-bit pixels and grey data with
    bernoulli; an explicit --likelihood, or an explicit --binarize dynamic, is kept."""
    spec = parse(argv)
    assert (spec.model.likelihood, spec.data.binarize) == (likelihood, binarize)
    assert parse(to_argv(spec)) == spec  # a job's trainer flags give back the same spec


def test_the_default_likelihood_follows_the_channels() -> None:
    """default_likelihood reads the channels a dataset has: a folder's own (3) or its --channels."""
    assert default_likelihood(DataSpec(name="folder")) == "logistic"
    assert default_likelihood(DataSpec(name="folder", channels=3)) == "logistic"
    assert default_likelihood(DataSpec(name="folder", channels=1)) == "bernoulli"
    assert default_likelihood(DataSpec(name="cifar10")) == "logistic"
    assert default_likelihood(DataSpec(name="kmnist")) == "bernoulli"


def test_a_stored_colour_bernoulli_spec_keeps_its_likelihood() -> None:
    """Changing a stored spec (a resume's new --epochs) never re-applies the default likelihood."""
    stored = RunSpec.from_values({"data": {"name": "folder"}, "model": {"likelihood": "bernoulli"}})
    assert stored.with_values({"train": {"epochs": 3}}).model.likelihood == "bernoulli"
    assert RunSpec.from_dict(stored.to_dict()) == stored


def test_the_cli_help_says_the_default_depends_on_the_data() -> None:
    """--likelihood's help states the data-dependent default instead of a plain 'bernoulli'."""
    train = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    (action,) = [a for a in train._actions if "--likelihood" in a.option_strings]
    assert "default: logistic for colour data" in action.help


def test_unknown_data_keys_are_still_refused_by_name() -> None:
    """The default's look at the data section leaves unknown keys to the spec's own message."""
    with pytest.raises(ValueError, match=r"Unknown key.*'colour'"):
        RunSpec.from_values({"data": {"colour": True}})


@pytest.mark.parametrize(
    ("channels", "choice", "likelihood"),
    [(0, "from the data", "logistic"), (1, "from the data", "bernoulli"), (0, "bernoulli", "bernoulli")],
)
def test_the_train_form_starts_a_folder_run_with_the_data_default(
    tmp_path: Path, launched: list[list[str]], channels: int, choice: str, likelihood: str
) -> None:
    """The Train form, its likelihood left "from the data", starts a colour folder run with the
    logistic and a grey one with bernoulli; bernoulli chosen on colour is kept. The job file and the
    trainer's flags agree with the CLI."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("pages/7_Train.py").run()
    at.selectbox(key="t_dataset").set_value("folder")
    at.number_input(key="t_channels").set_value(channels)
    assert at.radio(key="t_likelihood").value == "from the data"
    at.radio(key="t_likelihood").set_value(choice)
    at.text_input(key="t_name").set_value("colour")
    make_colour_folder(tmp_path / "images")  # the page imports it before the run starts
    at.text_input(key="t_data_dir").set_value(str(tmp_path / "images"))
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    spec = RunSpec.from_dict(json.loads((tmp_path / "runs" / "colour" / "job.json").read_text())["spec"])
    assert spec.model.likelihood == likelihood
    assert spec.data.binarize == ("none" if likelihood == "logistic" else "dynamic")
    chosen = [] if choice == "from the data" else ["--likelihood", choice]
    cli = parse(["--dataset", "folder", "--preset", "fast", "--channels", str(channels), *chosen])
    assert spec.with_values({"data": {"folder": ""}}) == cli  # the job names its folder; the rest agrees
    assert parse(launched[0]) == cli  # the trainer stores --data-dir as the folder itself
