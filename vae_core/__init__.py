"""vae_core: variational autoencoders for MNIST-like images, without any UI.

The public API; pages, tools and tests import from here.
"""

from vae_core.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint
from vae_core.data import DATASETS, DatasetError, ImageSet, load_images
from vae_core.device import pick_device
from vae_core.evaluation import (
    Scores,
    active_units,
    eval_inputs,
    kl_per_dim,
    log_likelihood,
    score,
    summarize,
)
from vae_core.jobs import (
    Run,
    RunError,
    Status,
    list_runs,
    resume_run,
    start_run,
    stop_run,
    tail_log,
    validate_run_name,
)
from vae_core.model import VAE
from vae_core.objective import ElboTerms, bernoulli_nll, elbo_terms, gaussian_kl, iwae_bound
from vae_core.preprocess import ImageError, preprocess_image
from vae_core.records import EpochRecord, Outcome, StepRecord, read_metrics, read_outcome
from vae_core.spec import DataSpec, RunSpec, Runtime, TrainConfig, VAEConfig
from vae_core.timelapse import Snapshot, load_timelapse
from vae_core.training import FitResult, TrainingDiverged, fit

__all__ = [
    "DATASETS",
    "VAE",
    "CheckpointError",
    "DataSpec",
    "DatasetError",
    "ElboTerms",
    "EpochRecord",
    "FitResult",
    "ImageError",
    "ImageSet",
    "Outcome",
    "Run",
    "RunError",
    "RunSpec",
    "Runtime",
    "Scores",
    "Snapshot",
    "Status",
    "StepRecord",
    "TrainConfig",
    "TrainingDiverged",
    "VAEConfig",
    "active_units",
    "bernoulli_nll",
    "elbo_terms",
    "eval_inputs",
    "fit",
    "gaussian_kl",
    "iwae_bound",
    "kl_per_dim",
    "list_checkpoints",
    "list_runs",
    "load_checkpoint",
    "load_images",
    "load_timelapse",
    "log_likelihood",
    "pick_device",
    "preprocess_image",
    "read_metrics",
    "read_outcome",
    "resume_run",
    "save_checkpoint",
    "score",
    "start_run",
    "stop_run",
    "summarize",
    "tail_log",
    "validate_run_name",
]
