"""Loading a state dict into a model the way every caller needs it."""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict

import torch
import torch.nn as nn


def load_state(model: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """`model.load_state_dict(state)`, lending the model's own version metadata to a state dict
    that lost it (a plain dict, as prunekit's files hold): MNASNet refuses to load without."""
    if getattr(state, "_metadata", None) is None:
        state = OrderedDict(state)
        state._metadata = getattr(model.state_dict(), "_metadata", None)
    model.load_state_dict(state)


def cpu_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The model's state dict on the CPU, detached: what checkpoints and model files hold."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
