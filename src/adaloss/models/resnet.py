"""ResNet-18, CIFAR variant (He et al., 2016)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from adaloss.models.registry import as_image_shape, as_sizes, positive_int, register_model

__all__ = ["BasicBlock", "ResNet", "resnet18"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet from "Deep Residual Learning for Image Recognition" (He et al., 2016), CIFAR variant.

    The ImageNet stem (7x7 stride-2 convolution and max-pool) is replaced by one 3x3 stride-1
    convolution, as is usual for 32x32 inputs; four stages of basic blocks (the first stride 1,
    the others stride 2) end in adaptive average pooling and a linear classifier.

    Args:
        input_shape: ``(C, H, W)``.
        num_outputs: number of classes.
        blocks: basic blocks per stage (``(2, 2, 2, 2)`` is ResNet-18).
        width: channels of the first stage; stage ``i`` has ``width * 2**i``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        blocks: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
    ) -> None:
        super().__init__()
        c, _, _ = as_image_shape("resnet", input_shape)
        blocks = as_sizes("blocks", blocks, allow_empty=False)
        positive_int("width", width)
        self.stem = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        in_channels = width
        for i, n in enumerate(blocks):
            channels = width * 2**i
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_channels, channels, stride=2 if i > 0 and j == 0 else 1))
                in_channels = channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_outputs)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = self.stages(self.stem(x))
        return self.fc(self.pool(out).flatten(1))


@register_model("resnet18")
def resnet18(input_shape: tuple[int, ...], num_outputs: int, *, width: int = 64) -> ResNet:
    """ResNet-18 for CIFAR (He et al., 2016): about 11.17M parameters with 10 classes."""
    as_image_shape("resnet18", input_shape)
    return ResNet(input_shape, num_outputs, blocks=(2, 2, 2, 2), width=width)
