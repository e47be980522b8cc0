"""LayerNorm over channels that are being pruned.

A LayerNorm normalises over all C channels of a position, so a masked (zeroed) channel still
counts in its mean and variance, and the masked model would differ from the compacted one, where
the channel is gone. A LayerNorm in a channel group is therefore given statistics over its kept
channels only (`keep`, set from its weight mask when channels are masked; None: all kept, plain
LayerNorm, no extra work): the masked model then computes exactly what the compacted one does.
ConvNeXt's LayerNorms (and torchvision's channels-first LayerNorm2d) are the ones that matter.
"""
from __future__ import annotations

from typing import Dict, Optional, Type

import torch
import torch.nn as nn
import torch.nn.functional as F


def kept_channels_norm(x: torch.Tensor, norm: nn.LayerNorm, keep: torch.Tensor) -> torch.Tensor:
    """LayerNorm of x (channels last) over the `keep` channels; the others output 0."""
    kept = F.layer_norm(x.index_select(-1, keep), (len(keep),),
                        None if norm.weight is None else norm.weight.index_select(0, keep),
                        None if norm.bias is None else norm.bias.index_select(0, keep), norm.eps)
    return x.new_zeros(x.shape).index_copy(-1, keep, kept)


class _ChannelMasked:
    keep: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.keep is None:
            return super().forward(x)
        if self.channels_first:
            return kept_channels_norm(x.permute(0, 2, 3, 1), self, self.keep).permute(0, 3, 1, 2)
        return kept_channels_norm(x, self, self.keep)


_VARIANTS: Dict[type, type] = {}


def channels_first(cls: type) -> Optional[bool]:
    """Whether a LayerNorm class normalises channels-first inputs (torchvision's and timm's
    LayerNorm2d) or channels-last ones (nn.LayerNorm itself); None for any other subclass,
    whose forward is unknown (its channel groups are then not pruned)."""
    cls = cls.__mro__[1] if issubclass(cls, _ChannelMasked) else cls
    if cls is nn.LayerNorm:
        return False
    return (cls.__name__ == "LayerNorm2d"
            and cls.__module__ in ("torchvision.models.convnext", "timm.layers.norm"))


def supported(module: nn.Module) -> bool:
    return (isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1
            and channels_first(type(module)) is not None)


def channel_masked(norm: nn.LayerNorm) -> None:
    """Give `norm` kept-channel statistics (its class swapped for a subclass; the state dict
    and the plain LayerNorm behaviour while nothing is masked are unchanged)."""
    cls = type(norm)
    if issubclass(cls, _ChannelMasked):
        return
    if cls not in _VARIANTS:
        variant: Type = type(f"ChannelMasked{cls.__name__}", (_ChannelMasked, cls),
                             {"channels_first": channels_first(cls)})
        _VARIANTS[cls] = variant
    norm.__class__ = _VARIANTS[cls]


def set_kept(norm: nn.Module, weight_mask: Optional[torch.Tensor]) -> None:
    """The kept channels of a channel-masked LayerNorm, from its weight mask (None: all)."""
    if not isinstance(norm, _ChannelMasked):
        return
    if weight_mask is None or bool(weight_mask.all()):
        norm.keep = None
    else:
        norm.keep = torch.nonzero(weight_mask.flatten()).flatten().to(norm.weight.device)
