"""The embedded default: scikit-learn's digits (8x8 grey images, 10 classes) and a small CNN.

The data ships inside scikit-learn, so nothing is downloaded. The CNN is trained
once (a few seconds on a CPU) and cached as safetensors under $PYCOMP_CACHE
(default ~/.cache/pycomp).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CACHE_VERSION = "v1"


class DigitsCNN(nn.Module):
    """(B, 1, 8, 8) -> (B, 10) logits. `width` scales every hidden layer (width=1: 32-64-128)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.width = width
        c1, c2, h = int(32 * width), int(64 * width), int(128 * width)
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc1 = nn.Linear(c2 * 16, h)
        self.fc2 = nn.Linear(h, 10)

    def init_kwargs(self) -> dict:
        """The constructor arguments, so a file can name this model and pycomp.load rebuild it."""
        return {"width": self.width}

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def digits_tensors(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train, y_train, x_test, y_test): a fixed stratified 80/20 split, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(range(len(y)), test_size=0.2, random_state=seed, stratify=data.target)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def batches(x: Tensor, y: Tensor, batch_size: int = 128, shuffle: bool = False, seed: int = 0) -> list:
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(len(y))
    return [(x[order[i:i + batch_size]], y[order[i:i + batch_size]]) for i in range(0, len(y), batch_size)]


def digits_loaders(batch_size: int = 128) -> tuple[list, list]:
    """(train batches, test batches) of (images, labels); the test set has 360 images."""
    xtr, ytr, xte, yte = digits_tensors()
    return batches(xtr, ytr, batch_size, shuffle=True), batches(xte, yte, batch_size)


def accuracy(model: nn.Module, data) -> float:
    model.eval()
    with torch.no_grad():
        correct = total = 0
        for x, y in data:
            correct += int((model(x).argmax(-1) == y).sum())
            total += len(y)
    return correct / total


def train_digits_cnn(width: float = 1.0, epochs: int = 30, seed: int = 0) -> DigitsCNN:
    torch.manual_seed(seed)
    model = DigitsCNN(width)
    xtr, ytr, _, _ = digits_tensors()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    for epoch in range(epochs):
        for x, y in batches(xtr, ytr, 64, shuffle=True, seed=seed * 1000 + epoch):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        sched.step()
    return model.eval()


def cache_dir() -> Path:
    return Path(os.environ.get("PYCOMP_CACHE", Path.home() / ".cache" / "pycomp"))  # read here: cache folder


def pretrained_digits_cnn(width: float = 1.0, retrain: bool = False) -> DigitsCNN:
    """The trained digits CNN, from the cache or trained now (and cached)."""
    from safetensors.torch import load_file, save_file

    path = cache_dir() / f"digits_cnn_w{width:g}_{CACHE_VERSION}.safetensors"
    model = DigitsCNN(width)
    if path.exists() and not retrain:
        try:
            model.load_state_dict(load_file(str(path)))
            return model.eval()
        except Exception:  # a corrupt or stale cache file: train again and overwrite it
            pass
    model = train_digits_cnn(width)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    return model


def train_batches(batch_size: int = 128) -> list:
    """Training batches: `pycomp explore --calib pycomp.models.digits:train_batches`."""
    return digits_loaders(batch_size)[0]


def test_batches(batch_size: int = 128) -> list:
    """The 360 test images: `pycomp explore --data pycomp.models.digits:test_batches`."""
    return digits_loaders(batch_size)[1]
