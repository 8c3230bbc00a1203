"""The command line: `python -m vae_core train ...`, `... evaluate ...` and `... export ... --onnx DIR`.

Every expected failure (a missing dataset, a bad checkpoint, a diverged run) ends with one clear
line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vae_core import onnx_model
from vae_core.atomic import DiskFullError
from vae_core.checkpoint import CheckpointError, load_checkpoint, model_file, read_checkpoint, update_metrics
from vae_core.data import DatasetError, ImageSet
from vae_core.device import pick_device
from vae_core.evaluation import eval_inputs, nll_subset, summarize
from vae_core.gaps import GAPS_IMAGES, GAPS_K, format_gaps, gaps
from vae_core.model import VAE
from vae_core.presets import apply_preset
from vae_core.records import EpochRecord, Outcome, Record, clear_outcome, write_outcome
from vae_core.spec import DATA_DIR_HELP, RunSpec, Runtime, add_flags, given_values
from vae_core.training import (
    FitResult,
    TrainingDiverged,
    check_out,
    fit,
    load_data,
    load_test,
    resume_spec,
    shaped_for,
    with_folder,
)

MAX_K = 100_000  # importance samples: the log-weights of a batch of 100 images take 4 MB per 10,000


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a VAE and write a checkpoint folder")
    add_flags(p)  # one flag per option of the run spec (vae_core.spec), and the runtime's
    p.add_argument("--out", required=True, help="checkpoint folder to write, e.g. checkpoints/NAME")
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
    p.add_argument(
        "--k", type=int, default=5000, help=f"importance samples for the NLL (0 skips it; at most {MAX_K})"
    )
    p.add_argument("--n", type=int, default=None, help="evaluate only the first N test images (at least 1)")
    p.add_argument(
        "--nll-n",
        type=int,
        default=None,
        metavar="M",
        help="score the NLL on the first M of them only (the ELBO still on all): for dear decoders",
    )
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


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a checkpoint as an ONNX model folder (vae_core.onnx_model)")
    p.add_argument("checkpoint", help="checkpoint folder (or its model.pt)")
    p.add_argument("--onnx", required=True, metavar="OUT_DIR", help="folder to write the three files to")
    p.add_argument("--name", default="", help="the model card's name (default: the checkpoint folder's)")
    p.add_argument("--description", default="", help="the model card's description")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vae_core", description="Train and evaluate VAEs.")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _evaluate_parser(sub)
    _export_parser(sub)
    return parser


class _ProgressBar:
    """A tqdm bar over training steps, fed by fit's callback records."""

    def __init__(self, total: int, initial: int = 0) -> None:
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def __call__(self, record: Record) -> None:
        self.bar.update(record.step - self.bar.n)
        if isinstance(record, EpochRecord):
            self.bar.write(
                f"epoch {record.epoch:.2f}: test ELBO {record.test_elbo:.2f} "
                f"(recon {record.test_recon:.2f} + KL {record.test_kl:.2f}) nats/image, "
                f"{record.active_units} active units"
            )
        else:
            self.bar.set_postfix(
                elbo=f"{record.elbo:.2f}", kl=f"{record.kl:.2f}", img_s=f"{record.samples_per_s:.0f}"
            )


def run_spec(args: argparse.Namespace) -> RunSpec:
    """The spec the flags ask for, the --preset filling what they leave out; with --resume, the
    stored one, of which only --epochs may change."""
    values = given_values(args)
    if not args.resume:
        values = apply_preset(values, _device(args))
        return RunSpec.from_values({s: v for s, v in values.items() if s != "runtime"})
    del values["runtime"]  # how the run executes, not what it trains
    stored = resume_spec(args.out)
    asked = stored.with_values(values)
    changed = [flag for flag in stored.differences(asked) if flag != "--epochs"]
    if changed:
        raise ValueError(
            f"--resume continues {args.out} with its stored settings, but {', '.join(changed)} differ from "
            f"them; only --epochs (a new total) may change. Leave them out, or train a new run."
        )
    return asked


def run_runtime(args: argparse.Namespace, spec: RunSpec) -> Runtime:
    """How the run executes: the runtime flags, and the threads of the spec's preset if not given."""
    given = {**spec.to_dict(), "runtime": given_values(args)["runtime"]}
    return Runtime(**apply_preset(given, _device(args))["runtime"])


def _device(args: argparse.Namespace) -> str:
    return getattr(args, "runtime.device") or Runtime().device


def train(args: argparse.Namespace) -> int:
    """Train, and record how the run ended in outcome.json (rank 0), however it ends once started.

    Bad options, and an --out that already holds a checkpoint (without --resume), are refused before
    the run starts: nothing is written then."""
    spec = run_spec(args)
    runtime = run_runtime(args, spec)
    check_out(args.out, args.resume)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone reports
    if main_rank:
        clear_outcome(args.out)  # a resumed run's previous ending
    outcome = Outcome("failed", "The trainer ended before recording why.")
    stop = _stop_on_sigterm()
    try:
        result = _train(args, runtime, spec, main_rank)
        pos = result.position
        where = f"at epoch {pos.epoch}, step {pos.step}"
        outcome = (
            Outcome("stopped", f"Stopped {where}; resume it to continue.", pos.epoch, pos.step)
            if result.interrupted
            else Outcome("finished", f"Finished {where}.", pos.epoch, pos.step)
        )
        return 0
    except KeyboardInterrupt:  # SIGINT or SIGTERM before training began, or after it ended
        outcome = Outcome("stopped", "Stopped before training began (no checkpoint).", *_saved(args.out))
        return 0
    except TrainingDiverged as e:
        outcome = Outcome("diverged", str(e), e.epoch, e.step)
        raise
    except BaseException as e:
        outcome = Outcome("failed", _error_line(e), *_saved(args.out))
        raise
    finally:
        stop()
        if main_rank:
            _record(args.out, outcome)


def _train(args: argparse.Namespace, runtime: Runtime, spec: RunSpec, main_rank: bool) -> FitResult:
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    from vae_core.folder import tqdm_progress  # imported late: Pillow, only for folders

    spec = with_folder(spec, runtime.data_dir)  # a folder's absolute path: the checkpoint's data
    data = load_data(spec.data, runtime.data_dir, tqdm_progress() if main_rank else None)
    if data.report is not None and main_rank:
        print(data.report.summary(), file=sys.stderr)
    train_set, test_set = data.train, data.test  # read once: fit and the timelapse
    spec = shaped_for(spec, train_set)  # the model's image_shape: the data's
    done = read_checkpoint(args.out)["step"] if args.resume else 0
    total = -(-len(train_set) // spec.train.batch_size) * spec.train.epochs
    bar = _ProgressBar(total, initial=done) if main_rank else None
    result = fit(
        spec,
        args.out,
        train_set=train_set,
        test_set=test_set,
        device=runtime.device,
        resume=args.resume,
        callback=bar,
        on_epoch=_timelapse_hook(spec, test_set, Path(args.out)) if runtime.timelapse else None,
    )
    if bar:
        bar.bar.close()
        state = "stopped (resume with --resume)" if result.interrupted else "finished"
        print(
            f"Training {state} at epoch {result.position.epoch}, step {result.position.step}: "
            f"checkpoint in {args.out}",
            file=sys.stderr,
        )
    return result


def _stop_on_sigterm() -> Callable[[], None]:
    """Until training installs its own handler, SIGTERM stops like Ctrl-C; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _saved(out: str) -> tuple[int, int]:
    """(epoch, step) of the checkpoint in `out`, (0, 0) if there is none."""
    try:
        ckpt = read_checkpoint(out)
    except CheckpointError:
        return 0, 0
    return ckpt.get("epoch", 0), ckpt.get("step", 0)


def _error_line(e: BaseException) -> str:
    expected = (DatasetError, CheckpointError, ValueError, OSError)
    return describe_error(e) if isinstance(e, expected) else f"{type(e).__name__}: {describe_error(e)}"


def describe_error(e: BaseException) -> str:
    """What a failure says in one line: a full disk's message without its '[Errno 28]' prefix, and
    never an empty reason."""
    if isinstance(e, DiskFullError) and e.strerror:
        return e.strerror
    return str(e).strip() or type(e).__name__


def _record(out: str, outcome: Outcome) -> None:
    try:
        write_outcome(out, outcome)
    except OSError as e:  # an unwritable --out: say so, without hiding the run's own error
        print(f"error: could not write the outcome of the run to {out}: {e}", file=sys.stderr)


def _timelapse_hook(spec: RunSpec, test: ImageSet, out: Path) -> Callable[[VAE, int], None]:
    """Snapshots of the latent space after every epoch, on a fixed subset of the test set."""
    from vae_core import timelapse

    n = timelapse.N_IMAGES
    x, labels = eval_inputs(test, spec.data.binarize)[:n], test.labels[:n]
    return lambda model, epoch: timelapse.snapshot(model, x, labels, out, epoch)


def evaluate(args: argparse.Namespace) -> int:
    """Measure a checkpoint; exit 1 with an error line if its ELBO or NLL is not a finite number."""
    if not 0 <= args.k <= MAX_K:
        raise ValueError(f"k must be between 0 and {MAX_K}, got {args.k}")
    if args.n is not None and args.n < 1:
        raise ValueError(f"n must be at least 1, got {args.n}")
    if args.nll_n is not None and args.nll_n < 1:
        raise ValueError(f"nll-n must be at least 1, got {args.nll_n}")
    model = load_checkpoint(args.checkpoint, device=pick_device(args.device))
    test = load_test(model.meta.spec.data, args.data_dir)
    x = eval_inputs(test, model.meta.spec.data.binarize)[: args.n]
    if args.gaps:
        return _print_gaps(args, model, x[: args.n or GAPS_IMAGES])
    metrics = summarize(model, x, k=args.k, nll_n=args.nll_n, progress=not args.json)
    bad = [
        name
        for name in ("elbo", "recon", "kl", "nll")
        if name in metrics and not math.isfinite(metrics[name])
    ]
    if bad:
        values = ", ".join(f"{name} {metrics[name]}" for name in bad)
        raise ValueError(
            f"{args.checkpoint} gives non-finite results on the {model.meta.dataset} test set ({values}): "
            f"the model's outputs overflow. Nothing was written; retrain the model or use an earlier "
            f"checkpoint."
        )
    if args.write and onnx_model.is_onnx_folder(args.checkpoint):
        onnx_model.write_evaluation(args.checkpoint, metrics)  # beside the graphs, which stay as they are
    elif args.write:
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
        lines.append(f"  NLL (k={m['nll_k']}{nll_subset(m)}) {m['nll']:8.2f} nats/image")
    if "bits_per_dim" in m:
        lines.append(f"  bits/dim    {m['bits_per_dim']:9.3f}  (from the {m['bits_per_dim_from'].upper()})")
    lines.append(f"  active units {m['active_units']} of {len(m['kl_per_dim'])}")
    lines.append("  KL per dim  " + " ".join(f"{v:.2f}" for v in m["kl_per_dim"]))
    return "\n".join(lines)


def export(args: argparse.Namespace) -> int:
    """Write one of our checkpoints as an ONNX model folder."""
    model = load_checkpoint(args.checkpoint)
    if not isinstance(model, VAE):
        raise ValueError(f"{args.checkpoint} is an ONNX model already: export takes a vae_core checkpoint")
    name = args.name or model_file(args.checkpoint).parent.name
    out = onnx_model.export_onnx(model, args.onnx, name=name, description=args.description)
    print(f"ONNX model written to {out}", file=sys.stderr)
    return 0


COMMANDS = {"train": train, "evaluate": evaluate, "export": export}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.command]
    try:
        return command(args)
    except (DatasetError, CheckpointError, TrainingDiverged, ValueError, OSError) as e:
        print(f"error: {describe_error(e)}", file=sys.stderr)  # a full disk is a DiskFullError (OSError)
        return 1
