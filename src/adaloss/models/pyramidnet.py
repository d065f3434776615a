"""PyramidNet with basic blocks (Han et al., 2017)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from adaloss.models.registry import as_image_shape, positive_int, register_model

__all__ = ["PyramidBasicBlock", "PyramidNet"]


class PyramidBasicBlock(nn.Module):
    """``BN-conv3x3-BN-ReLU-conv3x3-BN`` with an additive shortcut that is average-pooled when
    the block downsamples and zero-padded in the channel dimension when the block widens."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        # ceil_mode matches the ceil(H / 2) output of the stride-2, padding-1 convolution.
        self.downsample = nn.AvgPool2d(2, ceil_mode=True) if stride != 1 else nn.Identity()
        self.extra_channels = channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.bn1(x))
        out = self.bn3(self.conv2(F.relu(self.bn2(out))))
        shortcut = self.downsample(x)
        if self.extra_channels > 0:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return out + shortcut


@register_model("pyramidnet")
class PyramidNet(nn.Module):
    """PyramidNet from "Deep Pyramidal Residual Networks" (Han et al., 2017), basic-block variant.

    A 3x3 stem with 16 channels is followed by three groups of ``(depth - 2) / 6`` basic blocks
    whose width grows additively by ``alpha / num_blocks`` per block (rounded), so the last
    block has ``16 + alpha`` channels; the second and third groups downsample. Shortcuts are
    parameter-free (average pooling and zero-padded channels). PyramidNet-110 with alpha 48
    (the default) has about 1.7M parameters.

    Args:
        input_shape: ``(C, H, W)``.
        num_outputs: number of classes.
        depth: total depth; ``(depth - 2) % 6 == 0`` (e.g. 20, 56, 110, 272).
        alpha: total widening over all blocks.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        depth: int = 110,
        alpha: int = 48,
    ) -> None:
        super().__init__()
        c, _, _ = as_image_shape("pyramidnet", input_shape)
        positive_int("depth", depth)
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(
                "Expected `depth` of pyramidnet to satisfy (depth - 2) % 6 == 0 and depth >= 8 "
                f"(e.g. 20, 56, 110, 272), but got {depth!r}."
            )
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
            raise ValueError(f"Expected `alpha` to be a number >= 0, but got {alpha!r}.")
        n = (depth - 2) // 6
        step = alpha / (3 * n)
        self.stem = nn.Sequential(nn.Conv2d(c, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        width = 16.0
        in_channels = 16
        groups: list[nn.Module] = []
        for i in range(3):
            blocks = []
            for j in range(n):
                width += step
                channels = int(round(width))
                blocks.append(PyramidBasicBlock(in_channels, channels, stride=2 if i > 0 and j == 0 else 1))
                in_channels = channels
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(in_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_outputs)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.groups(self.stem(x))))
        return self.fc(self.pool(out).flatten(1))
