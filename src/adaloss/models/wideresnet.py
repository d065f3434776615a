"""Wide Residual Networks (Zagoruyko & Komodakis, 2016)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from adaloss._validation import check_fraction
from adaloss.models.registry import as_image_shape, positive_int, register_model

__all__ = ["WideBasicBlock", "WideResNet"]


class WideBasicBlock(nn.Module):
    """Pre-activation block ``BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3`` with a 1x1 projection
    shortcut (applied to the pre-activated input) when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


@register_model("wideresnet")
class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` from "Wide Residual Networks" (Zagoruyko & Komodakis, 2016).

    A 3x3 stem with 16 channels, three groups of ``(depth - 4) / 6`` wide blocks with
    ``16k, 32k, 64k`` channels (the last two downsample), then BN-ReLU, adaptive average
    pooling and a linear classifier. WRN-16-8 (the default) has about 11.0M parameters and
    WRN-28-10 about 36.5M with 10 classes.

    Args:
        input_shape: ``(C, H, W)``.
        num_outputs: number of classes.
        depth: total depth; ``(depth - 4) % 6 == 0`` (e.g. 10, 16, 22, 28, 40).
        widen_factor: width multiplier ``k``.
        dropout: dropout probability between the two convolutions of each block.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        depth: int = 16,
        widen_factor: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c, _, _ = as_image_shape("wideresnet", input_shape)
        positive_int("depth", depth)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                "Expected `depth` of wideresnet to satisfy (depth - 4) % 6 == 0 and depth >= 10 "
                f"(e.g. 10, 16, 22, 28, 40), but got {depth!r}."
            )
        positive_int("widen_factor", widen_factor)
        dropout = check_fraction("dropout", dropout, low_open=False)
        n = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.stem = nn.Conv2d(c, 16, 3, padding=1, bias=False)
        groups: list[nn.Module] = []
        in_channels = 16
        for i, width in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(WideBasicBlock(in_channels, width, stride, dropout))
                in_channels = width
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
