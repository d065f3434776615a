"""SqueezeNet 1.1 adapted to 32x32 inputs (Iandola et al., 2016)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adaloss._validation import check_fraction
from adaloss.models.registry import as_image_shape, register_model

__all__ = ["Fire", "SqueezeNet"]


def _conv(cin: int, cout: int, kernel: int, batch_norm: bool, stride: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Fire(nn.Module):
    """Fire module: a 1x1 squeeze layer feeding parallel 1x1 and 3x3 expand layers, concatenated."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int, batch_norm: bool) -> None:
        super().__init__()
        self.squeeze = _conv(in_channels, squeeze, 1, batch_norm)
        self.expand1x1 = _conv(squeeze, expand1x1, 1, batch_norm)
        self.expand3x3 = _conv(squeeze, expand3x3, 3, batch_norm)

    def forward(self, x: Tensor) -> Tensor:
        s = self.squeeze(x)
        return torch.cat([self.expand1x1(s), self.expand3x3(s)], dim=1)


# SqueezeNet 1.1 plan after the stem: fire modules (in, squeeze, expand 1x1, expand 3x3) and "M" pools.
_PLAN: tuple[tuple[int, int, int, int] | str, ...] = (
    "M",
    (64, 16, 64, 64),
    (128, 16, 64, 64),
    "M",
    (128, 32, 128, 128),
    (256, 32, 128, 128),
    "M",
    (256, 48, 192, 192),
    (384, 48, 192, 192),
    (384, 64, 256, 256),
    (512, 64, 256, 256),
)


@register_model("squeezenet")
class SqueezeNet(nn.Module):
    """SqueezeNet 1.1 from "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters" (Iandola et al., 2016).

    Adapted to 32x32 inputs: the 3x3 stride-2 stem is replaced by a 3x3 stride-1 convolution with
    64 channels, and the 3x3 stride-2 max-pools by 2x2 ones (skipped once the map is 1 pixel
    wide), giving 16x16, 8x8 and 4x4 fire stages instead of an early 4x reduction. BatchNorm
    after every convolution (``batch_norm=True``) follows the EvoMAL model archive. The head is
    ``Dropout -> conv1x1(num_outputs) -> global average pool``; the paper's final ReLU is omitted
    so that logits can be negative.

    Args:
        input_shape: ``(C, H, W)``.
        num_outputs: number of classes.
        dropout: dropout probability before the classifier convolution (0.5 in the paper).
        batch_norm: use BatchNorm after each hidden convolution.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        dropout: float = 0.5,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        c, h, w = as_image_shape("squeezenet", input_shape)
        dropout = check_fraction("dropout", dropout, low_open=False)
        layers: list[nn.Module] = [_conv(c, 64, 3, batch_norm)]
        for item in _PLAN:
            if isinstance(item, str):
                if min(h, w) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
            else:
                layers.append(Fire(*item, batch_norm=batch_norm))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(512, num_outputs, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        final = self.classifier[1]
        assert isinstance(final, nn.Conv2d)
        nn.init.normal_(final.weight, mean=0.0, std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
