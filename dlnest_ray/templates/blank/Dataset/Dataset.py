"""A stand-in dataset: two Gaussian blobs in 8-D, one per class. Replace it with your data.

``init`` must return ``(dataset_info, train_loader, val_loader)``; ``dataset_info`` is handed to
``Model.init``, so put there whatever the model needs to know about the data (sizes, vocabularies...).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from dlnest_ray import DatasetBase

# Fixed, so the data is the same whatever the run's seed (which the framework applies to torch globally).
DATA_SEED = 0
NUM_FEATURES, NUM_CLASSES = 8, 2
NUM_TRAIN, NUM_VAL = 1024, 256


def make_blobs(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points: label 0 around -0.75 in every coordinate, label 1 around +0.75, unit variance."""
    y = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    x = torch.randn(n, NUM_FEATURES, generator=generator) + 0.75 * (2 * y - 1).unsqueeze(1)
    return x, y


class Dataset(DatasetBase):
    def init(self, args: dict[str, Any]) -> tuple[dict[str, Any], DataLoader, DataLoader]:
        cfg = args["dataset_config"]
        # Replace from here: build your own torch Datasets.
        g = torch.Generator().manual_seed(DATA_SEED)
        train_ds = TensorDataset(*make_blobs(NUM_TRAIN, g))
        val_ds = TensorDataset(*make_blobs(NUM_VAL, g))

        # Keep this part: under DDP self.sampler() gives each rank its shard (None otherwise), and a
        # loader with a sampler must not shuffle itself.
        train_sampler = self.sampler(train_ds)
        val_sampler = self.sampler(val_ds, shuffle=False)
        workers = int(cfg.get("num_workers", 0))
        self.train_loader = DataLoader(
            train_ds,
            batch_size=cfg["batch_size"],
            shuffle=train_sampler is None,
            sampler=train_sampler,
            num_workers=workers,
        )
        self.val_loader = DataLoader(
            val_ds,
            batch_size=cfg["val_batch_size"],
            shuffle=False,
            sampler=val_sampler,
            num_workers=workers,
        )
        return {"num_features": NUM_FEATURES, "num_classes": NUM_CLASSES}, self.train_loader, self.val_loader
