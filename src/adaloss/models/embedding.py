"""Embedding network for metric learning."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from adaloss.models.linear import MLP
from adaloss.models.registry import as_image_shape, as_sizes, flat_size, positive_int, register_model

__all__ = ["EmbeddingNet"]


@register_model("embedding")
class EmbeddingNet(nn.Module):
    """Small embedding network mapping inputs to ``num_outputs``-dimensional embeddings.

    Image inputs ``(C, H, W)`` go through the four-block "Conv-4" trunk of Prototypical
    Networks (Snell et al., 2017): ``conv3x3-BN-ReLU-maxpool2`` blocks (a pool is skipped once the
    map is 1 pixel wide), then global average pooling and a linear projection. Any other input
    shape is flattened and fed to a ReLU MLP with ``hidden`` layers. ``num_outputs`` is the
    embedding dimension (64 is a typical choice); with ``normalize=True`` embeddings are
    L2-normalised onto the unit sphere.

    Args:
        input_shape: ``(C, H, W)`` for the conv trunk, anything else for the MLP.
        num_outputs: embedding dimension.
        channels: width of the conv trunk.
        hidden: hidden widths of the MLP used for non-image inputs.
        normalize: L2-normalise the embeddings.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        channels: int = 64,
        hidden: Sequence[int] = (256,),
        normalize: bool = True,
    ) -> None:
        super().__init__()
        in_features = flat_size(input_shape)
        positive_int("channels", channels)
        hidden = as_sizes("hidden", hidden)
        self.normalize = normalize
        self.net: nn.Module
        if len(tuple(input_shape)) == 3:
            c, h, w = as_image_shape("embedding", input_shape)
            layers: list[nn.Module] = []
            width = c
            for _ in range(4):
                layers += [nn.Conv2d(width, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
                if min(h, w) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                width = channels
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_outputs)]
            self.net = nn.Sequential(*layers)
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        else:
            self.net = MLP(in_features, num_outputs, hidden=hidden)

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return F.normalize(out, dim=1) if self.normalize else out
