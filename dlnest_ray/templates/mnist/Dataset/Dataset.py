"""MNIST, read straight from the original IDX files (no torchvision needed).

Where the files are looked for, first match wins:

1. ``dataset_config.data_root`` in dataset_config.json. A relative path is resolved against the current
   working directory, which at run time is the run's save package folder, not this project folder, so an
   absolute path is the safest choice.
2. The ``DLNEST_MNIST_DIR`` environment variable.
3. ``~/.cache/dlnest_ray/mnist``, downloaded there on first use.

A folder needs ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (plain or ``.gz``). With the
``train-*`` files as well, training uses the 60,000 training images and validation the 10,000 test
images. With only the t10k files, the first 8,000 test images are used for training and the last 2,000
for validation.
"""

from __future__ import annotations

import gzip
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlnest_ray import DatasetBase

ENV_VAR = "DLNEST_MNIST_DIR"
CACHE_DIR = Path("~/.cache/dlnest_ray/mnist")
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
MEAN, STD = 0.1307, 0.3081  # the usual MNIST statistics
SPLIT_AT = 8000  # t10k-only folders: images [0, 8000) train, [8000, 10000) validate


class MNISTDataset(DatasetBase):
    def init(self, args: dict[str, Any]) -> tuple[dict[str, Any], DataLoader, DataLoader]:
        cfg = args["dataset_config"]
        folder = self._data_folder(cfg.get("data_root"))

        test_x, test_y = load_split(folder, *TEST_FILES)
        if find_file(folder, TRAIN_FILES[0]) is not None:
            train_x, train_y = load_split(folder, *TRAIN_FILES)
            val_x, val_y = test_x, test_y
        else:
            train_x, train_y = test_x[:SPLIT_AT], test_y[:SPLIT_AT]
            val_x, val_y = test_x[SPLIT_AT:], test_y[SPLIT_AT:]
            if self.status.is_main:
                print(
                    f"MNIST: no training files in {folder}; training on t10k images [0, {SPLIT_AT}), "
                    f"validating on [{SPLIT_AT}, {len(test_x)})"
                )

        train_ds = TensorDataset(train_x, train_y)
        val_ds = TensorDataset(val_x, val_y)
        # Under DDP each rank gets its own shard through a DistributedSampler (None otherwise); a loader
        # with a sampler must not shuffle itself: the sampler shuffles.
        train_sampler = self.sampler(train_ds)
        val_sampler = self.sampler(val_ds, shuffle=False)
        pin = self.device.type == "cuda"
        workers = int(cfg.get("num_workers", 0))
        self.train_loader = DataLoader(
            train_ds,
            batch_size=cfg["batch_size"],
            shuffle=train_sampler is None,
            sampler=train_sampler,
            num_workers=workers,
            pin_memory=pin,
        )
        self.val_loader = DataLoader(
            val_ds,
            batch_size=cfg["val_batch_size"],
            shuffle=False,
            sampler=val_sampler,
            num_workers=workers,
            pin_memory=pin,
        )
        return {"num_classes": 10}, self.train_loader, self.val_loader

    def _data_folder(self, data_root: str | None) -> Path:
        """The folder holding the IDX files; downloads into the cache when no folder was named."""
        if data_root:
            return check_folder(Path(data_root).expanduser().resolve(), "dataset_config.data_root")
        if os.environ.get(ENV_VAR):
            return check_folder(Path(os.environ[ENV_VAR]).expanduser().resolve(), ENV_VAR)
        folder = CACHE_DIR.expanduser()
        download(folder, verbose=self.status.is_main)
        return folder


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def check_folder(folder: Path, named_by: str) -> Path:
    missing = [name for name in TEST_FILES if find_file(folder, name) is None]
    if missing:
        raise FileNotFoundError(
            f"MNIST folder {folder} (from {named_by}) lacks {', '.join(missing)} (plain or .gz); "
            f"it needs at least the two t10k files, and optionally {TRAIN_FILES[0]} and {TRAIN_FILES[1]}"
        )
    return folder


def load_split(folder: Path, images_name: str, labels_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images ``[N, 1, 28, 28]`` float32 and labels ``[N]`` int64."""
    images_path, labels_path = find_file(folder, images_name), find_file(folder, labels_name)
    if images_path is None or labels_path is None:
        raise FileNotFoundError(f"{folder} needs both {images_name} and {labels_name} (plain or .gz)")
    images = parse_idx(read_bytes(images_path), IMAGE_MAGIC, str(images_path))
    labels = parse_idx(read_bytes(labels_path), LABEL_MAGIC, str(labels_path))
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: label {labels.max()} is out of range 0-9; the file is corrupt")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).sub_(MEAN).div_(STD).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"cannot read {path} ({e}); it is corrupt or truncated: replace it") from None


def parse_idx(raw: bytes, magic: int, source: str) -> np.ndarray:
    """Parse an IDX file of unsigned bytes: a big-endian int32 magic, the dimensions, then the data."""
    ndim = magic & 0xFF  # 2051 = 0x0803: 3 dimensions; 2049 = 0x0801: 1 dimension
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise ValueError(f"{source}: {len(raw)} bytes is too short for an IDX header; the file is truncated")
    found, *dims = (int(v) for v in np.frombuffer(raw, dtype=">i4", count=1 + ndim))
    if found != magic:
        kind = "image" if magic == IMAGE_MAGIC else "label"
        raise ValueError(f"{source}: magic number {found}, expected {magic} for an MNIST {kind} file")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(
            f"{source}: {len(raw)} bytes, expected {expected} for shape {tuple(dims)}; "
            "the file is corrupt or truncated"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def download(folder: Path, *, verbose: bool = True) -> None:
    """Fetch the four MNIST files into ``folder`` (those already there are kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*TRAIN_FILES, *TEST_FILES):
        if find_file(folder, name) is not None:
            continue
        target = folder / f"{name}.gz"
        magic = IMAGE_MAGIC if "images" in name else LABEL_MAGIC
        errors = []
        for mirror in MIRRORS:
            try:
                with urllib.request.urlopen(mirror + target.name, timeout=60) as response:
                    data = response.read()
                # Check before keeping it, so a broken download is never cached.
                parse_idx(gzip.decompress(data), magic, target.name)
                break
            except (urllib.error.URLError, OSError, EOFError, zlib.error, ValueError) as e:
                errors.append(f"{mirror}: {e}")
        else:
            raise RuntimeError(
                f"could not download MNIST file {target.name} ({'; '.join(errors)}). If this machine is "
                f"offline, copy the MNIST IDX files (at least t10k-images-idx3-ubyte.gz and "
                f"t10k-labels-idx1-ubyte.gz) into a folder and name it with the {ENV_VAR} environment "
                "variable or the data_root key in dataset_config.json"
            )
        if verbose:
            print(f"MNIST: downloaded {target.name} into {folder}")
        # Write then rename, so a crash (or another DDP rank downloading too) never leaves half a file.
        part = target.with_name(f"{target.name}.{os.getpid()}.part")
        part.write_bytes(data)
        os.replace(part, target)
