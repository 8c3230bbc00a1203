"""Datasets: IDX reading, folder lookup, the missing-dataset message, batches and binarisation."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

import vae_core.data as vdata
from vae_core import DatasetError, ImageSet, load_images
from vae_core.data import fixed_binarization, read_idx, sample_pixels, to_float


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def write_split(folder: Path, prefix: str, n: int, *, gz: bool = True, sep: str = "-") -> np.ndarray:
    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images{sep}idx3-ubyte{suffix}", images, compress=gz)
    write_idx(folder / f"{prefix}-labels{sep}idx1-ubyte{suffix}", np.arange(n) % 10, compress=gz)
    return images


@pytest.mark.parametrize("gz", [True, False])
def test_reads_a_folder_of_idx_files(tmp_path: Path, gz: bool) -> None:
    """A --data-dir with plain or gzipped IDX files loads as uint8 (N, 1, 28, 28) and int64 labels."""
    images = write_split(tmp_path, "t10k", 12, gz=gz)
    test = load_images("mnist", "test", tmp_path)
    assert test.images.dtype == torch.uint8 and test.images.shape == (12, 1, 28, 28)
    assert torch.equal(test.images[:, 0], torch.from_numpy(images))
    assert test.labels.tolist() == [i % 10 for i in range(12)]
    assert test.classes[3] == "3"


def test_finds_kaggle_names_and_torchvision_layout(tmp_path: Path) -> None:
    """'train-images.idx3-ubyte' names and torchvision's <Class>/raw folders are found too."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    write_split(raw, "train", 5, gz=False, sep=".")
    train = load_images("fashion-mnist", "train", tmp_path)
    assert len(train) == 5 and train.classes[0] == "T-shirt/top"


def test_missing_dataset_says_how_to_provide_it(tmp_path: Path) -> None:
    """A folder without the files gives one message naming the files, --data-dir and VAE_DATA_DIR."""
    with pytest.raises(DatasetError) as info:
        load_images("kmnist", "test", tmp_path)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message and "--data-dir" in message and "VAE_DATA_DIR" in message


def test_failed_download_is_reported_not_raised_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without files and without network, the torchvision error becomes a DatasetError with advice."""
    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path))

    def offline(name: str, split: str) -> None:
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr("vae_core.data._download", offline)
    with pytest.raises(DatasetError, match=r"could not be downloaded.*name resolution"):
        load_images("mnist", "train")


def test_unknown_dataset_and_split_are_refused() -> None:
    """Names outside the known datasets and splits are refused with the choices."""
    with pytest.raises(DatasetError, match=r"fashion-mnist"):
        load_images("svhn")
    with pytest.raises(DatasetError, match=r"train"):
        load_images("mnist", "validation")


class FakeCIFAR10:
    """torchvision's CIFAR10 interface without its files: (N, 32, 32, 3) uint8 data, targets, classes."""

    classes: ClassVar = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    calls: ClassVar[list[tuple[str, bool, bool]]] = []

    def __init__(self, root: str, train: bool, download: bool) -> None:
        self.calls.append((root, train, download))
        n = 5 if train else 3
        self.data = np.random.default_rng(n).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.targets = [i % 10 for i in range(n)]


def test_cifar10_is_read_through_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cifar10 comes from torchvision's class: (N, 3, 32, 32) uint8, int64 labels, its class names."""
    monkeypatch.setattr("torchvision.datasets.CIFAR10", FakeCIFAR10)
    monkeypatch.setattr(FakeCIFAR10, "calls", [])
    train = load_images("cifar10", "train")
    test = load_images("cifar10", "test", tmp_path)
    expected = FakeCIFAR10(str(tmp_path), train=True, download=False).data.transpose(0, 3, 1, 2)
    assert train.images.shape == (5, 3, 32, 32) and train.images.dtype == torch.uint8
    assert np.array_equal(train.images.numpy(), expected) and train.labels.dtype == torch.int64
    assert test.labels.tolist() == [0, 1, 2] and test.classes[3] == "cat"
    assert FakeCIFAR10.calls[:2] == [(str(vdata.data_root()), True, True), (str(tmp_path), False, False)]


def test_missing_cifar10_is_a_dataset_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's failure (no files, no network) becomes a DatasetError saying how to provide the set."""

    def missing(root: str, train: bool, download: bool) -> None:
        raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")

    monkeypatch.setattr("torchvision.datasets.CIFAR10", missing)
    with pytest.raises(DatasetError, match=r"cifar10 test split .*Dataset not found.*--data-dir"):
        load_images("cifar10", "test", download=False)


def test_truncated_or_foreign_idx_files_are_refused(tmp_path: Path) -> None:
    """A truncated IDX file and a non-IDX file each give a DatasetError naming the file."""
    good = tmp_path / "a-idx3-ubyte"
    write_idx(good, np.zeros((4, 28, 28)), compress=False)
    good.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(DatasetError, match=r"truncated"):
        read_idx(good)
    foreign = tmp_path / "b-idx3-ubyte.gz"
    foreign.write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match=r"b-idx3-ubyte.gz"):
        read_idx(foreign)


def test_dynamic_binarisation_is_bernoulli_of_the_intensity() -> None:
    """Each binarised pixel is 1 with probability intensity/255; `none` keeps the intensity."""
    images = torch.full((20_000, 1, 2, 2), 64, dtype=torch.uint8)
    x = to_float(images, "dynamic")
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert x.mean().item() == pytest.approx(64 / 255, abs=0.005)
    assert torch.equal(to_float(images[:1], "none"), torch.full((1, 1, 2, 2), 64 / 255))


def test_sampled_pixels_follow_intensity_over_255_exactly() -> None:
    """Over 40k seeded draws of every intensity v: 0 never fires, 255 always does (a byte of 255 is
    redrawn, not kept), each v is within 4.5 standard errors of v/255, and the overall rate is v/255
    rather than the v/256 of a plain byte comparison (which would be 12 standard errors off)."""
    n = 40_000
    v = torch.arange(256, dtype=torch.uint8).repeat(n)
    x = sample_pixels(v, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and set(x.unique().tolist()) == {0.0, 1.0}
    rate = x.view(n, 256).double().mean(0)
    p = torch.arange(256, dtype=torch.float64) / 255
    assert rate[0] == 0 and rate[255] == 1
    assert ((rate - p).abs() <= 4.5 * (p * (1 - p) / n).sqrt()).all()
    overall_se = (p * (1 - p)).sum().sqrt() / (256 * n) ** 0.5
    assert abs(x.double().mean() - p.mean()) < 4 * overall_se
    again = [sample_pixels(v[:999], torch.Generator().manual_seed(1)) for _ in range(2)]
    assert torch.equal(*again)


def test_a_short_draw_of_random_bytes_is_topped_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """When a draw keeps too few words (here every other word holds a byte 255), a second draw
    supplies exactly the missing ones: n bytes come out, all below 255."""
    real, sizes = vdata._random_words, []

    def every_other_word_255(m: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        sizes.append(m)
        words = real(m, device, generator)
        if len(sizes) == 1:
            words[::2] = -1  # all eight bytes 255
        return words

    monkeypatch.setattr(vdata, "_random_words", every_other_word_255)
    u = vdata._bytes_below_255(8000, torch.device("cpu"), None)
    assert u.shape == (8000,) and u.dtype == torch.uint8 and u.max() < 255
    assert len(sizes) == 2 and sizes[1] < sizes[0]  # about half of the words were missing


def test_fixed_binarisation_is_repeatable() -> None:
    """The evaluation binarisation depends on the seed alone."""
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(fixed_binarization(images, 0), fixed_binarization(images, 0))
    assert not torch.equal(fixed_binarization(images, 0), fixed_binarization(images, 1))


def test_real_mnist_test_set(mnist_test: ImageSet) -> None:
    """The shared MNIST test set has 10k images with the official label counts."""
    assert mnist_test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(mnist_test.labels).tolist()[:2] == [980, 1135]
