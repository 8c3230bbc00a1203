"""The run spec: every option of a training run, declared once, with its default, range and help.

    RunSpec(data=DataSpec(...), model=VAEConfig(...), train=TrainConfig(...))

Each field carries an `Option` (its CLI flag and help, its form label, its choices or numeric range),
and `__post_init__` checks every value against it. Everything else is derived from these classes:
the `train` command's flags (`add_flags`, `given_values`), the flags that start a run (`to_argv`),
the Train form's widgets (`form_fields`), the job file and the checkpoint (`to_dict`, `from_dict`).
Adding an option is one field here plus its use. `Runtime` holds how a run executes (data folder,
device, threads); it is not part of what is trained, so it is not stored in the checkpoint.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from typing import Any, get_args, get_origin, get_type_hints

import torch

from vae_core.data import BINARIZE, DATASETS, FOLDER, TORCHVISION_SETS

ARCHITECTURES = ("mlp", "conv")
# p(x|z): bernoulli for binary pixels, logistic (discretised, 256 levels) for 8-bit ones; each is
# built by vae_core.likelihood.LIKELIHOODS. Those of 8-bit pixels take x = k / 255 (binarize "none").
LIKELIHOODS = ("bernoulli", "logistic")
EIGHT_BIT_LIKELIHOODS = ("logistic",)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 128
OWN_SIZE = 0  # image_size and channels: 0 keeps the data's own (64 and 3 for a folder)
FOLDER_IMAGE_SIZE, FOLDER_CHANNELS = 64, 3
COLOUR_CHANNELS = 3  # RGB: such data defaults to the 8-bit logistic likelihood (`default_likelihood`)
ACTIVATIONS = ("relu", "elu", "gelu", "tanh", "silu")  # built by vae_core.model.ACTIVATIONS
# How the learning rate decays after its linear warm-up (lr_warmup_epochs, none by default):
# constant: stays at lr; cosine and linear: from lr down to min_lr at the last epoch.
LR_SCHEDULES = ("constant", "cosine", "linear")
PRESETS = ("none", "fast")  # their settings: vae_core.presets
# fp32: every product in float32. bf16: mixed precision; the matrix products take bfloat16 operands
# and accumulate in float32, while the weights, Adam's state, the loss and its gradient at the
# logits stay float32. It halves the products' time on CPUs with AVX512-BF16 or AMX and on GPUs
# with bfloat16 tensor cores; elsewhere it is emulated, or left to float32, and no faster.
PRECISIONS = ("fp32", "bf16")
MAX_SEED = 2**31 - 1
DATA_DIR_HELP = (
    "folder with the dataset's IDX files (train-images-idx3-ubyte[.gz], ...); default: search "
    "$VAE_DATA_DIR, ./data and Debian's /usr/share/datasets, then download with torchvision. With "
    "--dataset folder: the folder of images itself (DIR/<class>/*.png, ...), stored in the checkpoint"
)


@dataclass(frozen=True)
class Option:
    """How one setting is asked for and checked: CLI flag and help, form label, allowed values."""

    help: str
    label: str = ""  # the form's label; empty: not on the form
    flag: str = ""  # empty: --field-name
    choices: tuple[str, ...] = ()
    min: float | None = None  # inclusive bounds of a number, or of each number of a tuple
    max: float | None = None
    max_items: int = 1  # a tuple field: how many numbers at most
    step: float | None = None  # the form's increment
    form_default: Any = None  # the form's initial value, where it is not the default
    default_shown: str = ""  # how the help states a default that depends on other options


def option(default: Any, **kwargs: Any) -> Any:
    """A dataclass field with its default and its `Option`."""
    return field(default=default, metadata={"option": Option(**kwargs)})


# ---------------------------------------------------------------- checking values


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _kind(hint: Any) -> tuple[type, bool, bool]:
    """(element type, is a tuple, may be None) of a field's annotation."""
    args = get_args(hint)
    optional = type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    if get_origin(hint) is tuple:
        return get_args(hint)[0], True, optional
    return hint, False, optional


def _number(name: str, value: Any, kind: type) -> int | float:
    """value as an int or a finite float; ValueError naming the field otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _shown(x: float) -> str:
    """A bound as people write it: 100000, 2147483647, 1e-08, 0.5."""
    return str(x) if isinstance(x, int) else f"{x:g}"


def _bounds(opt: Option) -> str:
    if opt.min is not None and opt.max is not None:
        return f"between {_shown(opt.min)} and {_shown(opt.max)}"
    return f"at least {_shown(opt.min)}" if opt.min is not None else f"at most {_shown(opt.max)}"


def _in_range(name: str, value: int | float, opt: Option, shown: Any) -> None:
    low = -math.inf if opt.min is None else opt.min
    high = math.inf if opt.max is None else opt.max
    if not low <= value <= high:
        raise ValueError(f"{name} must be {_bounds(opt)}, got {shown!r}")


def _checked(obj: object, f: Any, value: Any) -> Any:
    """One field's value, converted to its declared type and checked against its Option."""
    kind, many, optional = _kind(_hints(type(obj))[f.name])
    opt: Option | None = f.metadata.get("option")
    name = message_name(f)
    if value is None and optional:
        return None
    if many:
        if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
            raise ValueError(f"{name} must be a list of numbers, got {value!r}")
        value = tuple(_number(name, v, kind) for v in value)
        limit = opt.max_items if opt else len(value)
        if not 1 <= len(value) <= limit:
            raise ValueError(f"{name} takes 1 to {limit} numbers, got {len(value)}: {value}")
        for v in value:
            if opt:
                _in_range(name, v, opt, value)
        return value
    if kind in (int, float):
        value = _number(name, value, kind)
        if opt:
            _in_range(name, value, opt, value)
        return value
    if not isinstance(value, kind):
        raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}")
    if opt and opt.choices and value not in opt.choices:
        raise ValueError(f"{name} must be one of {opt.choices}, got {value!r}")
    return value


def check_fields(obj: object) -> None:
    """Convert and check every field of a frozen dataclass in place (for `__post_init__`)."""
    for f in fields(obj):
        object.__setattr__(obj, f.name, _checked(obj, f, getattr(obj, f.name)))


def message_name(f: Any) -> str:
    """How errors name a field: its flag without dashes, e.g. latent_dim, dataset."""
    opt: Option | None = f.metadata.get("option")
    return (opt.flag.lstrip("-").replace("-", "_") if opt and opt.flag else "") or f.name


# ---------------------------------------------------------------- the spec


@dataclass(frozen=True)
class DataSpec:
    """Which images a model is trained on, and how they become pixels in {0, 1} or [0, 1]."""

    name: str = option(
        "mnist",
        flag="--dataset",
        choices=(*DATASETS, *TORCHVISION_SETS, FOLDER),
        label="dataset",
        help="which dataset to train on (folder: the images in --data-dir)",
    )
    binarize: str = option(
        "dynamic",
        choices=BINARIZE,
        label="binarisation",
        help="dynamic: resample binary pixels every batch; none: continuous intensities",
    )
    # For --dataset folder the folder IS the data: `train` stores --data-dir's absolute path here,
    # so that evaluating the checkpoint rebuilds the same test split. Empty for named datasets.
    folder: str = ""
    image_size: int = option(
        OWN_SIZE,
        min=OWN_SIZE,
        max=MAX_IMAGE_SIZE,
        label="image size (0: the data's own)",
        help=f"square side in pixels, {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} (folder: resize the short "
        f"side, centre-crop); 0: the data's own ({FOLDER_IMAGE_SIZE} for a folder)",
    )
    channels: int = option(
        OWN_SIZE,
        min=0,
        max=3,
        label="channels (0: the data's own)",
        help=f"1 grey or 3 colour (folder only); 0: the data's own ({FOLDER_CHANNELS} for a folder)",
    )
    test_fraction: float = option(
        0.1,
        min=0.01,
        max=0.5,
        step=0.01,
        label="test fraction (folder)",
        help="share of a folder's images held out for testing when it has no train/ and test/ subfolders",
    )
    split_seed: int = option(
        0, min=0, max=MAX_SEED, label="split seed (folder)", help="seed of a folder's stratified test split"
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.image_size != OWN_SIZE and not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be 0 (the data's own) or between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE}, "
                f"got {self.image_size}"
            )
        if self.channels not in (OWN_SIZE, 1, 3):
            raise ValueError(
                f"channels must be 0 (the data's own), 1 (grey) or 3 (colour), got {self.channels}"
            )
        if self.name != FOLDER and (self.image_size, self.channels) != (OWN_SIZE, OWN_SIZE):
            raise ValueError(
                f"image_size and channels apply to --dataset {FOLDER} only; {self.name} images keep their "
                f"own shape: leave them at 0"
            )

    def folder_options(self) -> dict[str, Any]:
        """The options of `vae_core.folder.import_folder` this spec asks for (a folder dataset)."""
        return {
            "image_size": self.image_size or FOLDER_IMAGE_SIZE,
            "channels": self.channels or FOLDER_CHANNELS,
            "test_fraction": self.test_fraction,
            "seed": self.split_seed,
        }


@dataclass(frozen=True)
class VAEConfig:
    """Everything needed to rebuild a model; stored inside every checkpoint."""

    arch: str = option("mlp", choices=ARCHITECTURES, label="architecture", help="encoder/decoder family")
    # Two latent dimensions by default: the explorer's pages then show the latent space itself, with
    # no projection, as the app's default model (mnist-2d) does. Recipes name their latent_dim.
    latent_dim: int = option(2, min=1, max=512, label="latent dim", help="size of z")
    # mlp: widths of the hidden layers; conv: channels of each stride-2 convolution
    hidden: tuple[int, ...] = option(
        (400,),
        min=1,
        max=8192,
        max_items=8,
        label="hidden sizes",
        help="mlp: hidden layer widths; conv: channels of each stride-2 convolution",
    )
    activation: str = option("relu", choices=ACTIVATIONS, label="activation", help="non-linearity")
    likelihood: str = option(
        "bernoulli",
        choices=LIKELIHOODS,
        label="pixel likelihood",
        help="p(x|z): bernoulli for binary pixels; logistic, a discretised logistic for 8-bit pixels "
        "(colour photos; needs --binarize none, reports bits/dim)",
        default_shown="logistic for colour data (cifar10, a 3-channel folder) unless --binarize dynamic "
        "is given, else bernoulli",
    )
    image_shape: tuple[int, ...] = (1, 28, 28)  # (channels, height, width): set by the data, no option

    def __post_init__(self) -> None:
        check_fields(self)
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape is (channels, height, width), got {self.image_shape}")

    def to_dict(self) -> dict:
        return _plain(asdict(self))


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained; stored in its checkpoint. Batch size is the global batch."""

    epochs: int = option(
        10,
        min=1,
        max=100_000,
        label="epochs",
        help="total epochs (with --resume: a new total; leave it out to keep the stored one)",
    )
    batch_size: int = option(
        128, min=1, max=65_536, label="batch size (images / step)", help="global batch size (images per step)"
    )
    lr: float = option(1e-3, min=1e-8, max=1e6, step=1e-4, label="learning rate", help="Adam learning rate")
    lr_schedule: str = option(
        "constant", choices=LR_SCHEDULES, label="learning-rate schedule", help="learning-rate schedule"
    )
    min_lr: float = option(
        0.0,
        min=0.0,
        max=1e6,
        step=1e-5,
        label="final learning rate (cosine, linear)",
        help="final learning rate of the cosine and linear schedules",
    )
    lr_warmup_epochs: float = option(
        0.0,
        min=0.0,
        max=100_000.0,
        step=0.5,
        label="learning-rate warm-up (epochs)",
        help="epochs over which the learning rate ramps up linearly from 0 to --lr; the schedule's "
        "decay follows, over the remaining epochs",
    )
    beta: float = option(
        1.0,
        min=0.0,
        max=1000.0,
        step=0.5,
        label="β (KL weight)",
        help="KL weight in the training loss (reported ELBO uses 1)",
    )
    warmup_epochs: float = option(
        0.0,
        min=0.0,
        max=100_000.0,
        step=1.0,
        label="KL warm-up (epochs)",
        help="epochs over which β ramps up from 0",
    )
    seed: int = option(
        0, min=0, max=MAX_SEED, label="seed", help="seed for weights, batches and binarisation"
    )
    log_every: int = option(
        20,
        min=1,
        max=1_000_000,
        label="log every (steps)",
        help="steps between two step records in metrics.jsonl",
    )
    precision: str = option(
        "fp32",
        choices=PRECISIONS,
        label="precision",
        help="bf16: mixed precision, matrix products on bfloat16 operands, weights and loss "
        "in float32. Faster products on CPUs with AVX512-BF16 or AMX and on GPUs with "
        "bfloat16 tensor cores (Ampere on); slower or no faster elsewhere. Evaluation is "
        "always float32",
    )
    preset: str = option(
        "none",
        choices=PRESETS,
        label="preset",
        form_default="fast",
        help="fast: the batch size, learning-rate schedule, precision, threads and epochs measured to "
        "reach a good model soonest for the architecture and data (vae_core.presets); any option "
        "given explicitly overrides it (on the Train form: any option changed from its default). "
        "none: the defaults",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.lr_warmup_epochs >= self.epochs and self.lr_warmup_epochs > 0:
            raise ValueError(
                f"lr_warmup_epochs ({self.lr_warmup_epochs:g}) must be less than epochs ({self.epochs}): "
                f"the learning rate would never leave its warm-up. Shorten the warm-up or train longer."
            )

    def beta_at(self, epoch: float) -> float:
        """β, ramped linearly from 0 over the warm-up epochs."""
        if self.warmup_epochs == 0:
            return self.beta
        return self.beta * min(1.0, epoch / self.warmup_epochs)

    @property
    def products(self) -> torch.dtype:
        """The dtype the matrix products take their operands in."""
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def lr_at(self, epoch: float) -> float:
        """The learning rate `epoch` epochs in: lr t / W during a warm-up of W epochs, then the
        schedule's decay over the remaining epochs, with u = (t - W) / (epochs - W) going 0 -> 1:
        constant lr; cosine min_lr + (lr - min_lr) (1 + cos(pi u)) / 2; linear lr - (lr - min_lr) u."""
        warmup = self.lr_warmup_epochs
        if epoch < warmup:
            return self.lr * epoch / warmup
        if self.lr_schedule == "constant":
            return self.lr
        u = min(1.0, (epoch - warmup) / (self.epochs - warmup))
        if self.lr_schedule == "linear":
            return self.lr - (self.lr - self.min_lr) * u
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * u))


@dataclass(frozen=True)
class RunSpec:
    """A training run: the data, the model and how it is trained. The one place defaults live."""

    data: DataSpec = DataSpec()
    model: VAEConfig = VAEConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self) -> None:
        if self.model.likelihood in EIGHT_BIT_LIKELIHOODS and self.data.binarize != "none":
            raise ValueError(
                f"The {self.model.likelihood} likelihood scores 8-bit pixels, but binarize is "
                f"{self.data.binarize!r}, which makes them binary: pass --binarize none (or use "
                f"--likelihood bernoulli)"
            )

    def to_dict(self) -> dict:
        """Plain data (lists, not tuples) for JSON and checkpoints: {"data": {...}, "model": ..., ...}."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping) -> RunSpec:
        """The inverse of `to_dict`; missing options take their defaults, unknown keys are refused."""
        return cls.from_values(d)

    @classmethod
    def from_values(cls, values: Mapping[str, Mapping[str, Any]]) -> RunSpec:
        """A spec from {section: {field: value}}, each section optional; ValueError on unknown keys.

        An option not given takes its default, and the likelihood's depends on the data: the 8-bit
        logistic for colour images, bernoulli for grey ones (`default_likelihood`)."""
        return RunSpec().with_values(with_default_likelihood(values))

    def with_values(self, values: Mapping[str, Mapping[str, Any]]) -> RunSpec:
        """This spec with some fields changed, given as {section: {field: value}}.

        Choosing a likelihood of 8-bit pixels without saying how to binarise means binarize "none"
        (8-bit pixels are k / 255, never binarised); asking for both is refused by `__post_init__`."""
        if not isinstance(values, Mapping):
            raise ValueError(f"A run spec is a mapping of sections, got {type(values).__name__}")
        _refuse_unknown("run spec", values, SECTIONS)
        if values.get("model", {}).get("likelihood") in EIGHT_BIT_LIKELIHOODS:
            values = {**values, "data": {"binarize": "none", **values.get("data", {})}}
        parts = {}
        for name, cls in SECTIONS.items():
            changes = values.get(name, {})
            if not isinstance(changes, Mapping):
                raise ValueError(f"The {name} section of a run spec is a mapping, got {changes!r}")
            _refuse_unknown(f"{name} section", changes, {f.name for f in fields(cls)})
            parts[name] = replace(getattr(self, name), **changes)
        return RunSpec(**parts)

    def differences(self, other: RunSpec) -> list[str]:
        """The options (as flags) whose values differ between two specs."""
        return [
            flag
            for section, f, flag in _flagged()
            if getattr(getattr(self, section), f.name) != getattr(getattr(other, section), f.name)
        ]


SECTIONS: dict[str, type] = {"data": DataSpec, "model": VAEConfig, "train": TrainConfig}


def channels_of(data: DataSpec) -> int:
    """How many channels the spec's images have: 3 for cifar10 and (by default) a folder, else 1."""
    if data.name == FOLDER:
        return data.channels or FOLDER_CHANNELS
    return COLOUR_CHANNELS if data.name in TORCHVISION_SETS else 1


def default_likelihood(data: DataSpec) -> str:
    """The likelihood a run gets when none is asked for: the discretised logistic for colour
    (8-bit photos), bernoulli for the grey IDX sets and grey folders."""
    return "logistic" if channels_of(data) == COLOUR_CHANNELS else "bernoulli"


def with_default_likelihood(values: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    """`values` with the data's default likelihood added when none is given.

    An explicit binarize "dynamic" asks for binary pixels, so it keeps bernoulli (the mirror of
    `with_values`' rule that an 8-bit likelihood means binarize "none"); an explicit likelihood is
    kept as it is, bernoulli on colour included (each channel binarised as a grey level is)."""
    if not isinstance(values, Mapping) or not isinstance(values.get("model", {}), Mapping):
        return values  # with_values names what is wrong
    data_values = values.get("data", {})
    if "likelihood" in values.get("model", {}) or not isinstance(data_values, Mapping):
        return values
    if not set(data_values) <= {f.name for f in fields(DataSpec)}:
        return values  # with_values names the unknown keys
    if data_values.get("binarize") == "dynamic":
        return values
    likelihood = default_likelihood(replace(DataSpec(), **data_values))
    if likelihood == VAEConfig().likelihood:
        return values
    return {**values, "model": {**values.get("model", {}), "likelihood": likelihood}}


@dataclass(frozen=True)
class Runtime:
    """How a run executes, not what it trains: not stored in the checkpoint, given again on resume."""

    data_dir: str | None = option(None, help=DATA_DIR_HELP, label="data folder")
    device: str = option(
        "auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps", label="device"
    )
    threads: int | None = option(None, min=1, max=1024, help="CPU threads for PyTorch (default: all cores)")
    timelapse: bool = option(
        False,
        help="after every epoch, save the decoded latent grid and the map of 1000 test images (timelapse/)",
    )

    def __post_init__(self) -> None:
        check_fields(self)


def _refuse_unknown(what: str, given: Mapping, known: Any) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"Unknown key(s) in the {what}: {', '.join(map(repr, unknown))}")


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: what JSON and torch.load(weights_only=True) read back alike."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def parse_ints(text: str, what: str = "hidden sizes") -> tuple[int, ...]:
    """'512 256' or '512, 256' -> (512, 256): how the form reads a field of several whole numbers."""
    parts = text.replace(",", " ").split()
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(
            f"{what.capitalize()} must be positive whole numbers separated by spaces, e.g. '512 256'; "
            f"got {text!r}"
        )
    return tuple(int(p) for p in parts)


# ---------------------------------------------------------------- the command line


RUN_SECTIONS: dict[str, type] = {**SECTIONS, "runtime": Runtime}


def _flagged(sections: Mapping[str, type] = SECTIONS) -> Iterator[tuple[str, Any, str]]:
    """(section, field, flag) of every field that is an option."""
    for section, cls in sections.items():
        for f in fields(cls):
            if opt := f.metadata.get("option"):
                yield section, f, opt.flag or "--" + f.name.replace("_", "-")


def _help(opt: Option, default: Any) -> str:
    bounds = f"{_bounds(opt)}; " if opt.min is not None or opt.max is not None else ""
    shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
    if default is None or default is False:
        return opt.help
    return f"{opt.help} ({bounds}default: {opt.default_shown or shown})"


def add_flags(parser: argparse.ArgumentParser, sections: Mapping[str, type] = RUN_SECTIONS) -> None:
    """One flag per option; a flag not given stays None (so --resume can tell what was asked)."""
    for section, f, flag in _flagged(sections):
        opt, dest = f.metadata["option"], f"{section}.{f.name}"
        kind, many, _ = _kind(_hints(sections[section])[f.name])
        help_text = _help(opt, f.default)
        if kind is bool:
            parser.add_argument(flag, dest=dest, action="store_true", default=None, help=help_text)
            continue
        metavar = None if opt.choices else flag.lstrip("-").upper().replace("-", "_")
        parser.add_argument(
            flag,
            dest=dest,
            type=kind,
            nargs="+" if many else None,
            choices=opt.choices or None,
            default=None,
            help=help_text,
            metavar=metavar,
        )


def given_values(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The options given on the command line, as {section: {field: value}}."""
    values: dict[str, dict[str, Any]] = {section: {} for section in RUN_SECTIONS}
    for section, f, _ in _flagged(RUN_SECTIONS):
        value = getattr(args, f"{section}.{f.name}", None)
        if value is not None:
            values[section][f.name] = value
    return values


def _argv(part: object, sections: Mapping[str, type]) -> list[str]:
    argv: list[str] = []
    for section, f, flag in _flagged(sections):
        value = getattr(getattr(part, section) if section in SECTIONS else part, f.name)
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, tuple):
            argv += [flag, *map(str, value)]
        else:  # repr: a float's shortest exact decimal, so it parses back to the same float
            argv += [flag, value if isinstance(value, str) else repr(value)]
    return argv


def to_argv(spec: RunSpec) -> list[str]:
    """The `train` flags that give back `spec` exactly."""
    return _argv(spec, SECTIONS)


def runtime_argv(runtime: Runtime) -> list[str]:
    """The `train` flags of a runtime (data folder, device, threads, timelapse)."""
    return _argv(runtime, {"runtime": Runtime})


# ---------------------------------------------------------------- the form


@dataclass(frozen=True)
class FormField:
    """One widget of the Train form, derived from one spec field."""

    section: str
    name: str
    key: str  # the widget key, from the flag: latent_dim, batch_size, dataset, ...
    option: Option
    default: Any  # the spec's default: what an option left at it is taken to mean
    kind: type  # str (a choice), int, float, or tuple (several ints, typed as text)
    initial: Any  # what the widget starts at: the option's form_default, else its default


def form_fields() -> list[FormField]:
    """Every option of a RunSpec, in declaration order, as the form shows it."""
    out = []
    for section, f, flag in _flagged(SECTIONS):
        kind, many, _ = _kind(_hints(SECTIONS[section])[f.name])
        key, opt = flag.lstrip("-").replace("-", "_"), f.metadata["option"]
        initial = f.default if opt.form_default is None else opt.form_default
        out.append(FormField(section, f.name, key, opt, f.default, tuple if many else kind, initial))
    return out
