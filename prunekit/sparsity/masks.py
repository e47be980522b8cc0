"""MaskSet: binary masks over named parameters, re-applied after every optimiser step.

Re-applying after the step (rather than masking gradients) is what keeps momentum and weight decay
from reviving pruned weights (Distiller issue #53). All masks are applied in one fused
`torch._foreach_mul_`, so a masked training step costs one extra elementwise pass over the pruned
tensors, not one kernel launch per tensor.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn


class MaskSet:
    def __init__(self, model: nn.Module):
        self.model = model
        self._masks: Dict[str, torch.Tensor] = {}
        self._bound: Optional[Tuple[List[torch.Tensor], List[torch.Tensor]]] = None

    # ------------------------------------------------------------------ access
    def __contains__(self, name: str) -> bool:
        return name in self._masks

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __len__(self) -> int:
        return len(self._masks)

    def items(self) -> Iterator[Tuple[str, torch.Tensor]]:
        return iter(self._masks.items())

    def get(self, name: str) -> Optional[torch.Tensor]:
        return self._masks.get(name)

    def set(self, name: str, mask: torch.Tensor) -> None:
        """Set the mask of parameter `name` (1 keeps, 0 prunes), stored in the parameter's dtype."""
        p = self.model.get_parameter(name)
        if mask.shape != p.shape:
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, "
                             f"parameter {tuple(p.shape)}")
        self._masks[name] = mask.to(device=p.device, dtype=p.dtype).contiguous()
        self._bound = None

    def restrict(self, name: str, mask: torch.Tensor) -> None:
        """Prune more: AND `mask` into the existing one (or set it)."""
        old = self._masks.get(name)
        self.set(name, mask if old is None else old * mask.to(old.dtype))

    def drop(self, names) -> None:
        for n in names:
            self._masks.pop(n, None)
        self._bound = None

    def clear(self) -> None:
        self._masks.clear()
        self._bound = None

    def state(self) -> Dict[str, torch.Tensor]:
        """A snapshot to `restore` (masks are replaced, never modified in place)."""
        return dict(self._masks)

    def restore(self, state: Dict[str, torch.Tensor]) -> None:
        self._masks = dict(state)
        self._bound = None

    def rebind(self, model: nn.Module) -> None:
        """After a structural change (compaction replaces parameters), drop stale bindings."""
        self.model = model
        self._bound = None

    # ------------------------------------------------------------------ use
    @torch.no_grad()
    def apply(self) -> None:
        if not self._masks:
            return
        if self._bound is None:
            params = [self.model.get_parameter(n) for n in self._masks]
            self._bound = ([p.data for p in params], list(self._masks.values()))
        torch._foreach_mul_(*self._bound)
