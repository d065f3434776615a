"""LeNet-5 (LeCun et al., 1998)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adaloss.models.registry import as_image_shape, positive_int, register_model

__all__ = ["LeNet5"]


@register_model("lenet5")
class LeNet5(nn.Module):
    """LeNet-5 from "Gradient-Based Learning Applied to Document Recognition" (LeCun et al., 1998).

    ``conv 6@5x5 -> tanh -> avgpool 2 -> conv 16@5x5 -> tanh -> avgpool 2 -> FC 120 -> FC 84
    -> FC num_outputs`` with tanh between the fully connected layers; Xavier-uniform weights.

    The first convolution is zero-padded by 2 so that 28x28 MNIST keeps the classic 5x5x16
    feature map. The second is unpadded, as in the paper, when its input is at least 6x6;
    smaller maps (e.g. 8x8 digits give 4x4) get padding 2 so the map never collapses.
    The flattened size is measured with a dummy forward pass, so any input of at least
    4x4 works (8x8 digits, 28x28, 32x32).

    Args:
        input_shape: ``(C, H, W)``.
        num_outputs: number of classes.
        channels: filters of the two convolutions.
        hidden: widths of the two hidden fully connected layers.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        channels: tuple[int, int] = (6, 16),
        hidden: tuple[int, int] = (120, 84),
    ) -> None:
        super().__init__()
        c, h, w = as_image_shape("lenet5", input_shape, min_size=4)
        c1, c2 = (positive_int("channels", v) for v in _pair("channels", channels))
        f1, f2 = (positive_int("hidden", v) for v in _pair("hidden", hidden))
        pad2 = 0 if min(h, w) // 2 >= 6 else 2
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, kernel_size=5, padding=2),
            nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=pad2),
            nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.classifier = nn.Sequential(
            nn.Linear(flat, f1),
            nn.Tanh(),
            nn.Linear(f1, f2),
            nn.Tanh(),
            nn.Linear(f2, num_outputs),
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _pair(name: str, value: tuple[int, int]) -> tuple[int, int]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"Expected `{name}` to be a pair of positive ints, but got {value!r}.")
    return value[0], value[1]
