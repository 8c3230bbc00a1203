"""The command line: `python -m vae_core train ...` and `python -m vae_core evaluate ...`.

Every expected failure (a missing dataset, a bad checkpoint, a diverged run) ends with one clear
line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vae_core.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, update_metrics
from vae_core.data import BINARIZE, DATASETS, DatasetError, ImageSet, load_images
from vae_core.device import pick_device
from vae_core.evaluation import eval_inputs, summarize
from vae_core.gaps import GAPS_IMAGES, GAPS_K, format_gaps, gaps
from vae_core.model import ACTIVATIONS, ARCHITECTURES, VAE, VAEConfig
from vae_core.training import LR_SCHEDULES, PRECISIONS, TrainConfig, TrainingDiverged, fit, resume_configs

DATA_DIR_HELP = (
    "folder with the dataset's IDX files (train-images-idx3-ubyte[.gz], ...); default: search "
    "$VAE_DATA_DIR, ./data and Debian's /usr/share/datasets, then download with torchvision"
)


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a VAE and write a checkpoint folder",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="which dataset to train on")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--arch", choices=ARCHITECTURES, default="mlp", help="encoder/decoder family")
    p.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=[400],
        help="mlp: hidden layer widths; conv: channels of each stride-2 convolution",
    )
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu", help="non-linearity")
    p.add_argument("--latent-dim", type=int, default=20, help="size of z")
    p.add_argument("--batch-size", type=int, default=128, help="global batch size (images per step)")
    p.add_argument(
        "--epochs", type=int, default=None, help="total epochs (default 10; with --resume: the stored total)"
    )
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant", help="learning-rate schedule")
    p.add_argument("--min-lr", type=float, default=0.0, help="final learning rate of the cosine schedule")
    p.add_argument("--out", required=True, help="checkpoint folder to write, e.g. checkpoints/NAME")
    p.add_argument(
        "--beta", type=float, default=1.0, help="KL weight in the training loss (reported ELBO uses 1)"
    )
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="epochs over which β ramps up from 0")
    p.add_argument(
        "--binarize",
        choices=BINARIZE,
        default="dynamic",
        help="dynamic: resample binary pixels every batch; none: continuous intensities",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for weights, batches and binarisation")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: mixed precision, matrix products on bfloat16 operands, weights and loss in float32. "
        "Faster products on CPUs with AVX512-BF16 or AMX and on GPUs with bfloat16 tensor cores "
        "(Ampere on); slower or no faster elsewhere. Evaluation is always float32",
    )
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: all cores)")
    p.add_argument(
        "--timelapse",
        action="store_true",
        help="after every epoch, save the decoded latent grid and the map of 1000 test images (timelapse/)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the checkpoint in --out with its stored settings"
    )


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a checkpoint on its dataset's test set",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", help="checkpoint folder (or its model.pt)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--k", type=int, default=5000, help="importance samples for the NLL (0 skips it)")
    p.add_argument("--n", type=int, default=None, help="evaluate only the first N test images")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    p.add_argument(
        "--write", action="store_true", help="store the metrics in the checkpoint (its model card)"
    )
    p.add_argument(
        "--gaps",
        action="store_true",
        help="instead: log p(x), ELBO, refined ELBO* and the approximation and amortisation gaps "
        "(on the first --n test images, default 100)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vae_core", description="Train and evaluate VAEs.")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _evaluate_parser(sub)
    return parser


class _ProgressBar:
    """A tqdm bar over training steps, fed by fit's callback records."""

    def __init__(self, total: int, initial: int = 0) -> None:
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def __call__(self, record: dict) -> None:
        if record["event"] == "step":
            self.bar.update(record["step"] - self.bar.n)
            self.bar.set_postfix(
                elbo=f"{record['elbo']:.2f}", kl=f"{record['kl']:.2f}", img_s=f"{record['samples_per_s']:.0f}"
            )
        else:
            self.bar.update(record["step"] - self.bar.n)
            self.bar.write(
                f"epoch {record['epoch']:.2f}: test ELBO {record['test_elbo']:.2f} "
                f"(recon {record['test_recon']:.2f} + KL {record['test_kl']:.2f}) nats/image, "
                f"{record['active_units']} active units"
            )


def train(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume:
        model_config, config = resume_configs(args.out, args.epochs)
    else:
        model_config = VAEConfig(
            arch=args.arch, latent_dim=args.latent_dim, hidden=tuple(args.hidden), activation=args.activation
        )
        config = TrainConfig(
            dataset=args.dataset,
            epochs=args.epochs or 10,
            batch_size=args.batch_size,
            lr=args.lr,
            lr_schedule=args.lr_schedule,
            min_lr=args.min_lr,
            beta=args.beta,
            warmup_epochs=args.warmup_epochs,
            binarize=args.binarize,
            seed=args.seed,
            precision=args.precision,
        )
    train_set = load_images(config.dataset, "train", args.data_dir)
    test_set = load_images(config.dataset, "test", args.data_dir)  # read once: fit and the timelapse
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone reports
    done = read_checkpoint(args.out)["step"] if args.resume else 0
    total = -(-len(train_set) // config.batch_size) * config.epochs
    bar = _ProgressBar(total, initial=done) if main_rank else None
    result = fit(
        model_config,
        config,
        args.out,
        data_dir=args.data_dir,
        train_set=train_set,
        test_set=test_set,
        device=args.device,
        resume=args.resume,
        callback=bar,
        on_epoch=_timelapse_hook(config, test_set, Path(args.out)) if args.timelapse else None,
    )
    if bar:
        bar.bar.close()
        state = "stopped (resume with --resume)" if result.interrupted else "finished"
        print(
            f"Training {state} at epoch {result.position.epoch}, step {result.position.step}: "
            f"checkpoint in {args.out}",
            file=sys.stderr,
        )
    return 0


def _timelapse_hook(config: TrainConfig, test: ImageSet, out: Path) -> Callable[[VAE, int], None]:
    """Snapshots of the latent space after every epoch, on a fixed subset of the test set."""
    from vae_core import timelapse

    x, labels = eval_inputs(test, config.binarize)[: timelapse.N_IMAGES], test.labels[: timelapse.N_IMAGES]
    return lambda model, epoch: timelapse.snapshot(model, x, labels, out, epoch)


def evaluate(args: argparse.Namespace) -> int:
    model = load_checkpoint(args.checkpoint, device=pick_device(args.device))
    test = load_images(model.meta.dataset, "test", args.data_dir)
    x = eval_inputs(test, model.meta.train_config.get("binarize", "dynamic"))[: args.n]
    if args.gaps:
        return _print_gaps(args, model, x[: args.n or GAPS_IMAGES])
    metrics = summarize(model, x, k=args.k, progress=not args.json)
    if args.write:
        update_metrics(args.checkpoint, metrics)
    print(json.dumps(metrics) if args.json else format_report(args.checkpoint, model.meta.dataset, metrics))
    return 0


def _print_gaps(args: argparse.Namespace, model: VAE, x: torch.Tensor) -> int:
    summary = gaps(model, x, k=args.k or GAPS_K, progress=not args.json).summary()
    report = format_gaps(args.checkpoint, model.meta.dataset, len(x), summary)
    print(json.dumps(summary) if args.json else report)
    return 0


def format_report(name: str, dataset: str, m: dict) -> str:
    lines = [
        f"{name} on {dataset} test set ({m['n_images']} images)",
        f"  ELBO        {m['elbo']:9.2f} nats/image  (recon {m['recon']:.2f} + KL {m['kl']:.2f})",
    ]
    if "nll" in m:
        lines.append(f"  NLL (k={m['nll_k']}) {m['nll']:8.2f} nats/image")
    lines.append(f"  active units {m['active_units']} of {len(m['kl_per_dim'])}")
    lines.append("  KL per dim  " + " ".join(f"{v:.2f}" for v in m["kl_per_dim"]))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = train if args.command == "train" else evaluate
    try:
        return command(args)
    except (DatasetError, CheckpointError, TrainingDiverged, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
