"""VGG-16 with BatchNorm, CIFAR variant (Simonyan & Zisserman, 2015)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from adaloss.models.registry import as_image_shape, positive_int, register_model

__all__ = ["VGG", "VGG16_CONFIG", "vgg16"]

#: Layer plan of VGG-16 (configuration D): channel counts and ``"M"`` for 2x2 max-pooling.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class VGG(nn.Module):
    """VGG from "Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman, 2015).

    CIFAR variant: 3x3 convolutions with BatchNorm (Ioffe & Szegedy, 2015) and ReLU, then a
    single ``Linear(512, num_outputs)`` classifier. A max-pool that would shrink the feature
    map below 1x1 is skipped, and an adaptive average pool before the classifier makes the
    head independent of the input size (a no-op for 32x32 inputs, which end at 1x1).

    Args:
        input_shape: ``(C, H, W)``.
        num_outputs: number of classes.
        config: channel counts and ``"M"`` (max-pool) entries.
        batch_norm: use BatchNorm after each convolution.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        config: Sequence[int | str] = VGG16_CONFIG,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        c, h, w = as_image_shape("vgg", input_shape)
        layers: list[nn.Module] = []
        width = c
        for item in config:
            if item == "M":
                if min(h, w) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                continue
            if isinstance(item, str):
                raise ValueError(f"Expected `config` entries to be positive ints or 'M', but got {item!r}.")
            out = positive_int("config", item)
            layers.append(nn.Conv2d(width, out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            width = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_outputs)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model("vgg16")
def vgg16(
    input_shape: tuple[int, ...],
    num_outputs: int,
    *,
    width: int = 64,
    batch_norm: bool = True,
) -> VGG:
    """VGG-16-BN for CIFAR-sized inputs (Simonyan & Zisserman, 2015).

    ``width`` is the first stage's channel count; later stages scale with it (64 gives the
    standard 64-128-256-512-512 plan and about 14.7M parameters).
    """
    as_image_shape("vgg16", input_shape)
    positive_int("width", width)
    config = tuple(item if item == "M" else max(1, int(item) * width // 64) for item in VGG16_CONFIG)
    return VGG(input_shape, num_outputs, config=config, batch_norm=batch_norm)
