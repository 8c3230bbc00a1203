"""Presets: named sets of training options for an architecture and its data, filled in where not given.

    python -m vae_core train --arch mlp --hidden 400 --latent-dim 20 --preset fast --out runs/quick

`none` sets nothing: the spec's defaults. `fast` sets the batch size, the learning-rate schedule
(a linear warm-up to a peak, then a decay), the precision, the CPU threads and the epoch count that
reached a target quality soonest in `bench/time_to_quality.py` (the candidates measured are in the
README). Every option given explicitly wins over the preset. The chosen preset is stored in the spec
with the values it set, so a checkpoint says how it was trained; a resumed run keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vae_core.device import pick_device
from vae_core.spec import PRESETS, RUN_SECTIONS, SECTIONS, RunSpec

Values = Mapping[str, Mapping[str, Any]]  # {section: {field: value}}, as spec.given_values returns


@dataclass(frozen=True)
class Settings:
    """What a preset sets for one architecture and binarisation."""

    batch_size: int
    lr: float  # the peak, reached at the end of the warm-up
    lr_schedule: str  # the decay after the warm-up, down to min_lr at the last epoch
    lr_warmup_epochs: float
    min_lr: float
    epochs: int
    bf16: bool  # mixed precision where the device multiplies bfloat16 natively, else float32
    threads: int | None = None  # CPU threads; None: PyTorch's default (one per core)

    def values(self, device: torch.device) -> dict[str, dict[str, Any]]:
        """The options these settings give, as {section: {field: value}}."""
        precision = "bf16" if self.bf16 and multiplies_bf16(device) else "fp32"
        train = {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "lr_schedule": self.lr_schedule,
            "lr_warmup_epochs": self.lr_warmup_epochs,
            "min_lr": self.min_lr,
            "epochs": self.epochs,
            "precision": precision,
        }
        runtime = {"threads": self.threads} if self.threads and device.type == "cpu" else {}
        return {"train": train, "runtime": runtime}


# (architecture, binarisation) -> settings. The MLP's: the candidate that reached pytorch/examples'
# 10-epoch test loss in the fewest epochs of those measured (README, "Presets"). Batch 128 beat 256 and
# 512 at equal epochs (more steps); a peak of 6e-3 beat 3e-3 and 4e-3. The conv's: the MLP's schedule
# at half the peak over 10 epochs, measured on the shipped residual conv against that model's own
# recipe in 10 epochs (README, "Presets": -91.65 against -94.04, the long run's epoch 21).
MLP_FAST = Settings(128, 6e-3, "cosine", 0.3, 0.0, 5, bf16=True)
CONV_FAST = Settings(128, 3e-3, "cosine", 0.3, 0.0, 10, bf16=True)
FAST: dict[tuple[str, str], Settings] = {
    ("mlp", "none"): MLP_FAST,
    ("mlp", "dynamic"): MLP_FAST,
    ("conv", "none"): CONV_FAST,
    ("conv", "dynamic"): CONV_FAST,
}
TABLES: dict[str, dict[tuple[str, str], Settings]] = {"none": {}, "fast": FAST}
assert tuple(TABLES) == PRESETS, "every preset the spec offers has a table here"


def multiplies_bf16(device: torch.device) -> bool:
    """Whether the device multiplies bfloat16 in hardware: AVX512-BF16 or AMX on a CPU, a GPU with
    bfloat16 tensor cores (Ampere on). Elsewhere bf16 is emulated and no faster than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def settings_for(preset: str, arch: str, binarize: str) -> Settings | None:
    """The settings a preset gives an architecture and binarisation; None for `none`."""
    if preset not in TABLES:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    return TABLES[preset].get((arch, binarize))


def apply_preset(given: Values, device: str = "auto") -> dict[str, dict[str, Any]]:
    """The given options ({section: {field: value}}, the runtime's included or not) with the chosen
    preset's values added for every option not given. The preset is read from given["train"];
    the architecture and binarisation from the given values or their defaults."""
    values = {section: dict(given.get(section, {})) for section in RUN_SECTIONS}
    spec = RunSpec.from_values({section: values[section] for section in SECTIONS})
    settings = settings_for(spec.train.preset, spec.model.arch, spec.data.binarize)
    if settings is None:
        return values
    for section, preset_values in settings.values(pick_device(device)).items():
        values[section] = preset_values | values[section]
    return values


def resolve(given: Values, device: str = "auto") -> RunSpec:
    """The spec of the given options with the chosen preset filled in (the runtime's left out)."""
    values = apply_preset(given, device)
    return RunSpec.from_values({section: values[section] for section in SECTIONS})
