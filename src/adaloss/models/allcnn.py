"""All-CNN-C (Springenberg et al., 2015)."""

from __future__ import annotations

from torch import Tensor, nn

from adaloss._validation import check_fraction
from adaloss.models.registry import as_image_shape, positive_int, register_model

__all__ = ["AllCNNC"]


@register_model("allcnn_c")
class AllCNNC(nn.Module):
    """All-CNN-C from "Striving for Simplicity: The All Convolutional Net" (Springenberg et al., 2015).

    Three blocks of 3x3 convolutions (96, 96, 96/2 | 192, 192, 192/2 | 192 3x3, 192 1x1,
    num_outputs 1x1) where strided convolutions replace max-pooling, followed by global
    average pooling. As in the EvoMAL model archive, every convolution is followed by
    BatchNorm (``batch_norm=True``) and the 3x3 convolutions are all padded, so inputs smaller
    than 32x32 work; the last 1x1 convolution produces the logits directly (no ReLU, which would
    clip them). Dropout follows each strided convolution, as in the paper.

    Args:
        input_shape: ``(C, H, W)``.
        num_outputs: number of classes.
        channels: widths of the first and the later blocks (96, 192 in the paper).
        dropout: dropout probability after the two strided convolutions.
        batch_norm: use BatchNorm after each hidden convolution.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        channels: tuple[int, int] = (96, 192),
        dropout: float = 0.5,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        c, _, _ = as_image_shape("allcnn_c", input_shape)
        if not isinstance(channels, (tuple, list)) or len(channels) != 2:
            raise ValueError(f"Expected `channels` to be a pair of positive ints, but got {channels!r}.")
        a, b = (positive_int("channels", v) for v in channels)
        dropout = check_fraction("dropout", dropout, low_open=False)

        def conv(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=not batch_norm)
            ]
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU())
            return layers

        def drop() -> list[nn.Module]:
            return [nn.Dropout(dropout)] if dropout > 0 else []

        self.features = nn.Sequential(
            *conv(c, a, 3),
            *conv(a, a, 3),
            *conv(a, a, 3, stride=2),
            *drop(),
            *conv(a, b, 3),
            *conv(b, b, 3),
            *conv(b, b, 3, stride=2),
            *drop(),
            *conv(b, b, 3),
            *conv(b, b, 1),
        )
        self.head = nn.Sequential(
            nn.Conv2d(b, num_outputs, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
