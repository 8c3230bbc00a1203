"""Hostile and careless inputs: a full disk, non-finite weights, malformed IDX files, foreign files."""

from __future__ import annotations

import errno
import gzip
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_budget import peak_rss_growth
from tests.test_cli import idx_folder
from tests.test_data import write_idx
from tests.test_jobs import fake_run
from vae_core import (
    VAE,
    CheckpointError,
    DatasetError,
    RunSpec,
    VAEConfig,
    jobs,
    load_checkpoint,
    save_checkpoint,
)
from vae_core.checkpoint import MODEL_FILE, read_checkpoint
from vae_core.cli import main
from vae_core.data import read_idx
from vae_core.jobs import Status
from vae_core.records import Outcome, read_metrics, read_outcome
from vae_core.timelapse import load_timelapse


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return idx_folder(tmp_path_factory.mktemp("idx") / "data")


def train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    """Two epochs of 4 steps on the synthetic set, a record every step."""
    return ["train", "--data-dir", str(data), "--out", str(out), "--epochs", "2", "--hidden", "16",
            "--batch-size", "64", "--log-every", "1", "--device", "cpu", *extra]  # fmt: skip


def fill_disk(monkeypatch: pytest.MonkeyPatch, name: str = "", nth: int = 1) -> None:
    """From the nth temporary file written for `name` (any file if empty) on, fsync fails as on a
    full disk (the atomic writer's temporary files are named .NAME.XXXX.tmp)."""
    real, seen = os.fsync, []

    def fsync(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}." if name else "."):
            seen.append(fd)
            if len(seen) >= nth:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def temporary_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- 4: a full disk


@pytest.mark.parametrize("name", ["train_state.pt", MODEL_FILE])
def test_a_full_disk_at_the_second_checkpoint_is_one_error_line(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A checkpoint write failing for a full disk ends with exit 1 and one error line naming the file
    and the full disk; the first epoch's checkpoint still loads, no temporary file is left, and the
    outcome says failed with the same message."""
    out = tmp_path / "ck"
    fill_disk(monkeypatch, name, nth=2)
    assert main(train_argv(data, out)) == 1
    err = capsys.readouterr().err
    message = f"The disk is full: could not write {out / name} (the previous file, if any, is intact)"
    assert f"error: {message}" in err and "Traceback" not in err and "[Errno" not in err
    assert load_checkpoint(out).meta.epoch == 1
    assert temporary_files(out) == []
    outcome = read_outcome(out)
    assert outcome is not None and outcome.status == "failed" and outcome.message == message


def test_a_full_disk_while_logging_is_one_error_line(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append to metrics.jsonl failing for a full disk is reported as such, naming the log; the
    records written before it and the first epoch's checkpoint are kept."""
    import vae_core.training as training

    out, real, calls = tmp_path / "ck", training.append_record, []

    def append(folder: Path, record: object) -> None:
        calls.append(record)
        if len(calls) > 5:  # epoch 1: 4 step records and 1 epoch record
            raise OSError(errno.ENOSPC, "No space left on device")
        real(folder, record)

    monkeypatch.setattr(training, "append_record", append)
    assert main(train_argv(data, out)) == 1
    err = capsys.readouterr().err
    assert f"error: The disk is full: could not append to {out / 'metrics.jsonl'}" in err
    assert "Traceback" not in err and len(read_metrics(out)) == 5
    assert load_checkpoint(out).meta.epoch == 1 and read_outcome(out).status == "failed"  # type: ignore[union-attr]


def test_a_full_disk_while_writing_the_timelapse_is_one_error_line(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timelapse snapshot failing for a full disk names the snapshot; the earlier one is intact."""
    out = tmp_path / "ck"
    fill_disk(monkeypatch, "epoch_0002.npz")
    assert main(train_argv(data, out, "--timelapse")) == 1
    err = capsys.readouterr().err
    assert f"error: The disk is full: could not write {out / 'timelapse' / 'epoch_0002.npz'}" in err
    assert [s.epoch for s in load_timelapse(out)] == [1] and temporary_files(out) == []


def test_a_trainer_that_could_not_record_its_outcome_on_a_full_disk(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When even the outcome cannot be written, the trainer still prints both error lines, and the
    Train page reads the ended run as failed with the full disk named, not as killed."""
    out = tmp_path / "ck"
    fill_disk(monkeypatch, nth=3)  # every file from epoch 2's first checkpoint on
    assert main(train_argv(data, out)) == 1
    err = capsys.readouterr().err
    assert "error: The disk is full: could not write" in err and "could not write the outcome" in err
    assert read_outcome(out) is None

    folder = fake_run(tmp_path / "runs", "full", outcome=None)
    assert "(killed?)" in jobs.read_run(folder).message  # plenty of space: it was most likely killed
    monkeypatch.setattr(jobs.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 4096})())
    run = jobs.read_run(folder)
    assert run.status is Status.FAILED
    assert f"the disk holding {folder} is full (0.0 MiB free)" in run.message and "resume" in run.message


# ---------------------------------------------------------------- 5: non-finite weights and results


def small_model(folder: Path) -> VAE:
    model = VAE(VAEConfig(hidden=(16,)))
    save_checkpoint(folder, model, spec=RunSpec(model=model.config), metrics={"elbo": -90.0}, epoch=3, step=9)
    return model


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path: Path, value: float) -> None:
    """A checkpoint with a NaN or infinite weight is refused on load, naming the tensor and the count,
    so that no page shows its stored (stale) metrics beside black decodes."""
    model = small_model(tmp_path / "ck")
    with torch.no_grad():
        model.decoder[2].weight[3, :2] = value
    save_checkpoint(tmp_path / "ck", model, spec=RunSpec(model=model.config), metrics={}, epoch=3, step=9)
    with pytest.raises(
        CheckpointError, match=r"non-finite weights: 2 of the 12,544 values of decoder\.2\.weight"
    ):
        load_checkpoint(tmp_path / "ck")


def test_resuming_a_run_with_non_finite_weights_is_a_run_error(tmp_path: Path) -> None:
    """The Train page's Resume gets a RunError (which it shows) for a checkpoint that is refused."""
    folder = fake_run(tmp_path, "nan", outcome=Outcome("stopped", "Stopped.", 3, 9))
    model = small_model(folder)
    with torch.no_grad():
        model.encoder[1].bias[0] = float("nan")
    save_checkpoint(folder, model, spec=RunSpec(model=model.config), metrics={}, epoch=3, step=9)
    (folder / "train_state.pt").write_bytes(b"")
    with pytest.raises(
        jobs.RunError, match=r"nan cannot be resumed: .* non-finite weights: 1 of the 16 values"
    ):
        jobs.resume_run(jobs.read_run(folder))


def test_evaluate_exits_non_zero_on_non_finite_results(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture
) -> None:
    """Finite weights whose products overflow give a non-finite ELBO: evaluate prints an error line,
    exits 1 and writes nothing into the checkpoint."""
    model = small_model(tmp_path / "ck")
    with torch.no_grad():
        model.decoder[2].weight.fill_(3e38)  # finite, but any positive hidden unit overflows the logits
    save_checkpoint(tmp_path / "ck", model, spec=RunSpec(model=model.config), metrics={}, epoch=3, step=9)
    before = (tmp_path / "ck" / MODEL_FILE).read_bytes()
    argv = ["evaluate", str(tmp_path / "ck"), "--data-dir", str(data), "--k", "2", "--json", "--write"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'ck'} gives non-finite results on the mnist test set (elbo " in err
    assert (tmp_path / "ck" / MODEL_FILE).read_bytes() == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--k", "-1"], "k must be between 0 and 100000, got -1"),
     (["--k", "1000000"], "k must be between 0 and 100000, got 1000000"),
     (["--n", "0"], "n must be at least 1, got 0")],
)  # fmt: skip
def test_evaluate_flags_have_ranges(
    tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], message: str
) -> None:
    """evaluate's numeric flags are checked like train's: exit 1 and an error line with the range."""
    small_model(tmp_path / "ck")
    assert main(["evaluate", str(tmp_path / "ck"), *flags]) == 1
    assert f"error: {message}" in capsys.readouterr().err


def test_an_os_error_is_one_line_too(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An --out under a regular file fails with an error line, not a traceback."""
    (tmp_path / "file").write_text("")
    assert main(["train", "--out", str(tmp_path / "file" / "ck")]) == 1
    assert "error: [Errno 20] Not a directory" in capsys.readouterr().err


# ---------------------------------------------------------------- 8: IDX files


def idx_bytes(shape: tuple[int, ...], data: bytes, type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape) + data


def split(folder: Path, images: np.ndarray, labels: np.ndarray, gz: bool) -> Path:
    folder.mkdir(exist_ok=True)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images, compress=gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", labels, compress=gz)
    return folder / f"t10k-images-idx3-ubyte{suffix}"


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((5, 32, 32)), np.zeros(5),
         r"images-idx3-ubyte(\.gz)? holds an array of shape \(5, 32, 32\); expected \(N, 28, 28\) for "
         r"the images of a mnist split \(28 x 28 grey images\)"),
        (np.zeros((5, 28, 28, 3)), np.zeros(5), r"shape \(5, 28, 28, 3\); expected \(N, 28, 28\)"),
        (np.zeros((5, 28, 28)), np.zeros((5, 2)),
         r"labels-idx1-ubyte(\.gz)? holds an array of shape \(5, 2\); expected \(N,\) for the labels"),
        (np.zeros((5, 28, 28)), np.zeros(4),
         r"holds 5 images but .*labels-idx1-ubyte(\.gz)? holds 4 labels; a split has one label per image"),
        (np.zeros((5, 28, 28)), np.array([1, 2, 3, 12, 4]),
         r"labels-idx1-ubyte(\.gz)? holds label 12 \(for image 3\); mnist has 10 classes, labelled 0 to 9"),
    ],
    ids=["32x32", "colour", "2d-labels", "counts", "label-12"],
)  # fmt: skip
def test_idx_files_that_are_not_the_dataset_are_refused(
    tmp_path: Path, gz: bool, images: np.ndarray, labels: np.ndarray, message: str
) -> None:
    """Images of the wrong size or rank, labels of the wrong rank or count, and labels outside the
    dataset's classes are refused, naming the file, what it holds and what was expected."""
    split(tmp_path, images, labels, gz)
    with pytest.raises(DatasetError, match=message):
        load_images_test(tmp_path)


def load_images_test(folder: Path) -> object:
    from vae_core import load_images

    return load_images("mnist", "test", folder)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (idx_bytes((1_000_000, 28, 28), bytes(100)),
         r"is truncated: its header declares shape \(1000000, 28, 28\), 784,000,000 bytes of data, "
         r"but it holds 100"),
        (idx_bytes((2, 28, 28), bytes(2 * 784 + 5)),
         r"holds more data than its header declares \(shape \(2, 28, 28\)"),
        (idx_bytes((70_000, 70_000, 70_000), b""),
         r"declares shape \(70000, 70000, 70000\), 343,000,000,000,000 bytes"),
        (bytes([0, 0, 8, 200]), r"declares 200 dimensions; an IDX file of images has 3 and one of labels 1"),
        (idx_bytes((2, 28), bytes(8), type_code=0x0D),
         r"is an IDX file of 32-bit floats; expected unsigned bytes"),
        (bytes([0, 0, 8, 3, 0, 0]), r"is truncated: it ends inside its header"),
        (b"PK\x03\x04 a zip", r"is not an IDX file: it does not start with the IDX magic bytes 00 00"),
        (b"", r"is not an IDX file"),
    ],
    ids=["truncated", "oversized", "absurd-size", "absurd-ndim", "floats", "short-header", "zip", "empty"],
)  # fmt: skip
def test_malformed_idx_files_give_a_clear_error(
    tmp_path: Path, gz: bool, content: bytes, message: str
) -> None:
    """Headers that lie about the data, absurd dimensions and foreign files each give a DatasetError
    naming the file."""
    path = tmp_path / ("x-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(DatasetError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_a_header_declaring_far_more_than_the_file_holds_costs_no_memory(tmp_path: Path) -> None:
    """A 1 GB claim in a 100-byte file (gzipped or not) is refused without allocating the claim."""
    for name, compress in (("a-idx3-ubyte", False), ("b-idx3-ubyte.gz", True)):
        content = idx_bytes((1_250_000, 28, 28), bytes(100))  # 980 MB declared
        (tmp_path / name).write_bytes(gzip.compress(content) if compress else content)
        script = (
            "from vae_core.data import read_idx, DatasetError\nfrom pathlib import Path\n"
            f"try:\n    read_idx(Path({str(tmp_path / name)!r}))\n"
            "except DatasetError as e:\n    error = str(e)\n"
        )
        result = peak_rss_growth(script)
        assert "is truncated" in result["error"] and result["growth_mb"] < 50


# ---------------------------------------------------------------- 10: messages that say what a file is


class _Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, ("true",))


def checkpoint_files(folder: Path) -> dict[str, Path]:
    """Files that are not checkpoints, each in its own way."""
    small_model(folder / "good")
    good = (folder / "good" / MODEL_FILE).read_bytes()
    files = {
        "empty": b"",
        "random": np.random.default_rng(0).bytes(1000),
        "truncated": good[: len(good) // 2],
    }
    paths = {name: folder / f"{name}.pt" for name in [*files, "unsafe", "compressed", "zip", "damaged"]}
    for name, content in files.items():
        paths[name].write_bytes(content)
    torch.save({"format_version": 2, "x": _Exploit()}, paths["unsafe"])
    with zipfile.ZipFile(folder / "good" / MODEL_FILE) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(paths["compressed"], "w", zipfile.ZIP_DEFLATED) as z:
        for filename, content in entries.items():
            z.writestr(filename, content)
    with zipfile.ZipFile(paths["zip"], "w") as z:
        z.writestr("notes.txt", "hello")
    with zipfile.ZipFile(paths["damaged"], "w") as z:
        for filename, content in entries.items():
            z.writestr(filename, content[: len(content) // 2] if filename.endswith("data.pkl") else content)
    return paths


MESSAGES = {
    "empty": r"\.pt is empty \(0 bytes\): it is not a checkpoint$",
    "random": r"\.pt is not a PyTorch checkpoint file: it does not start like one",
    "truncated": r"\.pt is truncated: it starts like a PyTorch checkpoint, but its zip archive has no valid",
    "unsafe": rf"Refused to load .*unsafe\.pt: it holds pickled objects other than tensors and plain data "
    rf"\({os.system.__module__}\.system\), which could run code",
    "compressed": r"\.pt holds compressed entries \(.*\), which torch\.save never writes",
    "zip": r"\.pt is a zip archive but not a PyTorch checkpoint \(no data\.pkl\)",
    "damaged": r"\.pt is damaged: it is a complete PyTorch archive, but its contents cannot be read \(.+\)$",
}


@pytest.mark.parametrize("name", list(MESSAGES))
def test_each_foreign_file_is_described_as_what_it_is(tmp_path: Path, name: str) -> None:
    """Empty, random, truncated, unsafe, compressed, non-torch and damaged files each get their own
    message; only the unsafe one speaks of running code; none ends in an empty reason; the error
    carries the file's path apart, for a UI to show literally."""
    path = checkpoint_files(tmp_path)[name]
    with pytest.raises(CheckpointError, match=MESSAGES[name]) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert ("could run code" in message) == (name == "unsafe")
    assert not message.rstrip().endswith((":", "()", "( )")) and info.value.path == str(path)


def test_a_raw_pickle_is_refused_before_it_is_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain pickle whose unpickling would run code is never unpickled: it does not start like a
    PyTorch file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw.pt").write_bytes(
        pickle.dumps(type("X", (), {"__reduce__": lambda s: (os.system, ("touch pwned",))})())
    )
    with pytest.raises(CheckpointError, match="does not start like one"):
        read_checkpoint(tmp_path / "raw.pt")
    assert not (tmp_path / "pwned").exists()
