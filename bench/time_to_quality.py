"""Time to quality: seconds from process start until a model as good as pytorch/examples' VAE.

The target quality Q is the test loss of pytorch/examples' vae/main.py after its 10 epochs (784-400-20
MLP, Adam 1e-3, batch 128, `ToTensor` through a `DataLoader`, BCE on continuous pixels + KL; the copy
in bench/train_speed.py): the single-sample -ELBO over the 10k test images, measured in the same run.
Ours is `python -m vae_core train --arch mlp --hidden 400 --latent-dim 20 --binarize none --preset
fast`: the same model, objective and pixels. Its per-epoch `test_elbo` is the same estimate (one
posterior sample per test image, continuous pixels, recon = BCE summed over the pixels, + KL), and
its time to Q is until the end of the first epoch with test ELBO >= -Q.

How the clock runs: the parent reads `time.perf_counter()` just before it spawns a contender, and an
epoch ends when the child's line for it arrives through a pipe (the child prints it as the epoch's
test evaluation ends; ours after writing that epoch's checkpoint). The time therefore includes the
interpreter's start, the imports, loading the data and every evaluation. Both read the same
uncompressed IDX files. Each contender runs in its own process, one at a time, and the rounds
alternate their order.

Dynamic binarisation: the target is the binarised test ELBO that today's default recipe (ours with
`--binarize dynamic`, lr 1e-3 constant, batch 128, 10 epochs) reaches after its 10 epochs, measured
in the same run (or given with --dynamic-target); the contender is `--preset fast --binarize dynamic`.

    python bench/time_to_quality.py --data-dir data/mnist [--rounds 2] [--dynamic-target -99.1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from train_speed import torchvision_root  # bench/ is this script's folder, first on sys.path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = 60_000
MODEL = ["--dataset", "mnist", "--arch", "mlp", "--hidden", "400", "--latent-dim", "20"]
DEFAULT_RECIPE = ["--batch-size", "128", "--lr", "1e-3", "--lr-schedule", "constant", "--epochs", "10"]


@dataclass(frozen=True)
class Run:
    """One contender's run: per epoch, the seconds since its spawn and the test ELBO (nats / image)."""

    ends: list[float]  # seconds from just before the spawn to the end of each epoch
    elbos: list[float]
    epoch_seconds: list[float]  # each epoch alone, as the contender measures it (its test pass included)

    def time_to(self, target: float) -> tuple[float, int] | None:
        """(seconds, epoch) at the end of the first epoch with test ELBO >= target; None if never."""
        for epoch, (end, elbo) in enumerate(zip(self.ends, self.elbos, strict=True), start=1):
            if elbo >= target:
                return end, epoch
        return None

    @property
    def samples_per_s(self) -> float:
        """Training images per second of a median epoch, its test pass included."""
        return TRAIN_IMAGES / statistics.median(self.epoch_seconds)


def timed(command: list[str], log: Path) -> list[tuple[float, str]]:
    """Run `command`; each stdout line with the seconds, since just before the spawn, at which it
    arrived. Its stderr goes to `log`."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"}  # each line leaves the child as it is printed
    lines = []
    with open(log, "w") as err:
        start = time.perf_counter()
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, env=env) as p:
            for line in p.stdout:
                lines.append((time.perf_counter() - start, line))
    if p.returncode:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({p.returncode}): {log.read_text()[-2000:]}")
    return lines


def run_canonical(root: str, tmp: Path) -> Run:
    """pytorch/examples' recipe, as published (no loader worker on a CPU), 10 epochs."""
    child = [sys.executable, str(ROOT / "bench" / "train_speed.py"), "--canonical-child", root]
    lines = timed([*child, "--epochs", "10", "--workers", "0"], tmp / "canonical.log")
    records = [json.loads(line) for _, line in lines]  # one per epoch, printed after its test pass
    return Run([t for t, _ in lines], [-r["test_loss"] for r in records], [r["seconds"] for r in records])


def run_ours(flags: list[str], data_dir: str, device: str, tmp: Path) -> tuple[Run, float]:
    """`python -m vae_core train` with these flags; the run and its last logged samples/s."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    shutil.rmtree(out)
    command = [sys.executable, "-m", "vae_core", "train", *MODEL, *flags]
    command += ["--data-dir", data_dir, "--device", device, "--out", str(out)]
    # The progress bar writes a line "epoch N.00: test ELBO ..." to stdout after each epoch.
    arrivals = [t for t, line in timed(command, tmp / "ours.log") if line.startswith("epoch ")]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    if len(epochs) != len(arrivals):
        raise RuntimeError(f"{len(arrivals)} epoch lines on stdout but {len(epochs)} epoch records")
    walls = [0.0] + [r["wall_time"] for r in epochs]
    rates = [r["samples_per_s"] for r in records if r["event"] == "step"]  # none in a run of few steps
    rate = rates[-1] if rates else float("nan")
    shutil.rmtree(out)
    run = Run(arrivals, [r["test_elbo"] for r in epochs], [b - a for a, b in itertools.pairwise(walls)])
    return run, rate


def reached(run: Run, target: float) -> str:
    hit = run.time_to(target)
    if hit is None:
        return f"not reached in {len(run.elbos)} epochs (best {max(run.elbos):.2f})"
    return f"{hit[0]:.2f} s (epoch {hit[1]} of {len(run.elbos)})"


def spread(values: list[float], unit: str = "") -> str:
    """median and range: '9.10 s (8.70 to 9.90)'."""
    return f"{statistics.median(values):.2f}{unit} ({min(values):.2f} to {max(values):.2f})"


def one_round(r: int, args: argparse.Namespace, root: str, tmp: Path) -> dict[str, Run]:
    """Every contender once, in an order that alternates between rounds."""
    contenders = {
        "canonical": lambda: run_canonical(root, tmp),
        "fast": lambda: run_ours(["--binarize", "none", "--preset", "fast"], root, "cpu", tmp)[0],
    }
    if args.dynamic:
        if args.dynamic_target is None:
            default = ["--binarize", "dynamic", *DEFAULT_RECIPE]
            contenders["default dynamic"] = lambda: run_ours(default, root, "cpu", tmp)[0]
        fast = ["--binarize", "dynamic", "--preset", "fast"]
        contenders["fast dynamic"] = lambda: run_ours(fast, root, "cpu", tmp)[0]
    order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
    return {name: contenders[name]() for name in order}


def report_round(r: int, runs: dict[str, Run], args: argparse.Namespace) -> dict[str, float]:
    """Print one round; returns its numbers (Q, times, ratio)."""
    canonical, fast = runs["canonical"], runs["fast"]
    q = -canonical.elbos[-1]
    hit = fast.time_to(-q)
    done = canonical.ends[-1]
    print(f"round {r + 1}: Q = {q:.2f} nats, the example's test loss after epoch 10 (at {done:.2f} s)")
    print(f"  ours --preset fast: time to Q {reached(fast, -q)}; test ELBO per epoch "
          f"{', '.join(f'{e:.2f}' for e in fast.elbos)}")  # fmt: skip
    numbers = {"q": q, "canonical": canonical.ends[-1], "fast_final": fast.elbos[-1]}
    if hit:
        numbers |= {"fast": hit[0], "epoch": hit[1], "ratio": canonical.ends[-1] / hit[0]}
        print(f"  ratio {numbers['ratio']:.2f}x (target >= 8x)")
    example = canonical.samples_per_s
    print(f"  per epoch: example {spread(canonical.epoch_seconds, ' s')}, {example:,.0f} img/s; "
          f"ours {spread(fast.epoch_seconds, ' s')}, {fast.samples_per_s:,.0f} img/s "
          f"({fast.samples_per_s / example:.2f}x)")  # fmt: skip
    if args.dynamic:
        target = args.dynamic_target
        if target is None:
            default = runs["default dynamic"]
            target = default.elbos[-1]
            numbers["default_dynamic"] = default.ends[-1]
            print(f"  dynamic: the default recipe's binarised test ELBO after 10 epochs {target:.2f} "
                  f"(at {default.ends[-1]:.2f} s)")  # fmt: skip
        dyn = runs["fast dynamic"]
        numbers |= {"dynamic_target": target, "fast_dynamic_final": dyn.elbos[-1]}
        if hit_dynamic := dyn.time_to(target):
            numbers["fast_dynamic"] = hit_dynamic[0]
        print(f"  dynamic: ours --preset fast to {target:.2f}: {reached(dyn, target)}; "
              f"final {dyn.elbos[-1]:.2f}")  # fmt: skip
    return numbers


def summary(rounds: list[dict[str, float]]) -> None:
    print(f"\nover {len(rounds)} rounds (median and range):")

    def line(label: str, key: str, unit: str = "") -> None:
        values = [r[key] for r in rounds if key in r]
        if values:
            print(
                f"  {label:38s} {spread(values, unit)}"
                + (f"  [{len(values)} of {len(rounds)} rounds]" if len(values) < len(rounds) else "")
            )

    line("Q (nats)", "q")
    line("example, 10 epochs", "canonical", " s")
    line("ours --preset fast, to Q", "fast", " s")
    line("ratio", "ratio", "x")
    line("ours --preset fast, final test ELBO", "fast_final")
    line("default dynamic recipe, 10 epochs", "default_dynamic", " s")
    line("dynamic target (nats)", "dynamic_target")
    line("ours --preset fast dynamic, to target", "fast_dynamic", " s")
    line("ours --preset fast dynamic, final ELBO", "fast_dynamic_final")


def on_gpu(root: str, tmp: Path, q: float) -> None:
    import torch

    if not torch.cuda.is_available():
        return
    run, rate = run_ours(["--binarize", "none", "--preset", "fast"], root, "cuda", tmp)
    print(f"ours --preset fast on {torch.cuda.get_device_name()}: time to Q {reached(run, -q)}, "
          f"{rate:,.0f} samples/s (last logged steps)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "mnist", help="MNIST's IDX files")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-dynamic", dest="dynamic", action="store_false", help="skip the dynamic variant")
    parser.add_argument(
        "--dynamic-target", type=float, help="the default dynamic recipe's 10-epoch test ELBO, not measured"
    )
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {args.rounds} rounds"
    )
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        root = torchvision_root(args.data_dir, tmp)  # uncompressed IDX files, read by both
        rounds = []
        for r in range(args.rounds):
            rounds.append(report_round(r, one_round(r, args, root, tmp), args))
            sys.stdout.flush()
        summary(rounds)
        on_gpu(root, tmp, statistics.median(r["q"] for r in rounds))
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
