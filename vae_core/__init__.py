"""vae_core: variational autoencoders for MNIST-like images, without any UI.

The public surface, for users and for the app's pages: the model and its config, checkpoints,
the objective, data, evaluation and training. The rest lives in its own module and is imported
from there: job control in `vae_core.jobs`, the explorer's latent-space maths in
`vae_core.explore`, 2-D maps in `vae_core.projection`, the training timelapse in
`vae_core.timelapse`, the fast training paths in `vae_core.fast`.
"""

from vae_core.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint
from vae_core.data import DATASETS, DatasetError, ImageSet, load_images
from vae_core.evaluation import (
    Scores,
    active_units,
    eval_inputs,
    kl_per_dim,
    log_likelihood,
    score,
    summarize,
)
from vae_core.model import VAE
from vae_core.objective import (
    ElboTerms,
    bernoulli_nll,
    elbo_terms,
    gaussian_kl,
    iwae_bound,
    reparameterize,
)
from vae_core.preprocess import ImageError, preprocess_image
from vae_core.records import read_metrics
from vae_core.spec import DataSpec, RunSpec, TrainConfig, VAEConfig
from vae_core.training import FitResult, TrainingDiverged, fit

__all__ = [
    "DATASETS",
    "VAE",
    "CheckpointError",
    "DataSpec",
    "DatasetError",
    "ElboTerms",
    "FitResult",
    "ImageError",
    "ImageSet",
    "RunSpec",
    "Scores",
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
    "load_checkpoint",
    "load_images",
    "log_likelihood",
    "preprocess_image",
    "read_metrics",
    "reparameterize",
    "save_checkpoint",
    "score",
    "summarize",
]
