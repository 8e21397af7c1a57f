"""Training images held in memory as uint8 pixels at the network's input size and normalized
when a batch is taken: a quarter of the float32 inputs' memory (CIFAR-10's 50,000 training
images at 224 pixels: 7.5 GB, not 30 GB) and the same numbers, since preprocessing resizes and
crops in uint8 and normalizes last (`calibration.preprocess.input_pixels`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..calibration.preprocess import DataConfig, normalize


@dataclass(frozen=True)
class InputImages:
    """N images as uint8 N×H×W×3; indexing (an int, a slice, a tensor of indices) gives the
    float32 network inputs (…×3×H×W) of those images, as a float32 tensor would."""

    pixels: np.ndarray
    config: DataConfig

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        return torch.from_numpy(normalize(self.pixels[index], self.config))


Inputs = torch.Tensor | InputImages  # what training and the data-using steps take: either indexes alike


def first_rows(inputs: Inputs) -> torch.Tensor:
    """Each image's first pixel row of the network input, N×3×W (what a resume checkpoint
    fingerprints), without normalizing a whole held set."""
    if isinstance(inputs, InputImages):
        return torch.from_numpy(normalize(inputs.pixels[:, :1], inputs.config))[:, :, 0, :]
    return inputs[:, :, 0, :]
