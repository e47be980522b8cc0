"""Multi-head self-attention whose heads can be removed.

torchvision's ViT keeps its query/key/value projections in one `in_proj_weight` of
`nn.MultiheadAttention` (not a Linear: no unstructured or N:M pruning reaches it) and asserts
`embed_dim == num_heads * head_dim`, so a head cannot go; timm's `Attention` fuses them in one
`qkv` Linear. `HeadAttention` computes the same function with separate `q`, `k`, `v` and `proj`
Linears and a `num_heads` that follows their width: a head is `head_dim` rows of q, k and v and
`head_dim` columns of proj. A head whose rows are zeroed (weights and biases) has all-zero
scores, a uniform softmax over zero values and zero output, so the masked model computes what the
compacted one does. Pretrained weights and state dicts of the fused layouts load through
`split_fused` (see `convert`).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# The fused layouts a state dict may hold, per attention flavour:
# (fused qkv weight, fused qkv bias, output projection prefix)
FUSED = {"torchvision": ("in_proj_weight", "in_proj_bias", "out_proj."),
         "timm": ("qkv.weight", "qkv.bias", "proj.")}


class HeadAttention(nn.Module):
    """Self-attention over (batch, tokens, dim) with separate projections and prunable heads.
    `flavour` gives the call signature of the module it replaces: torchvision's
    `(query, key, value, need_weights=False) -> (out, None)` or timm's `(x, attn_mask=None,
    is_causal=False) -> out`."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, bias: bool = True,
                 proj_bias: bool = True, dropout: float = 0.0, flavour: str = "torchvision",
                 dim_out: Optional[int] = None):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout, self.flavour = num_heads, head_dim, dropout, \
            flavour
        width = num_heads * head_dim
        self.q = nn.Linear(dim, width, bias=bias)
        self.k = nn.Linear(dim, width, bias=bias)
        self.v = nn.Linear(dim, width, bias=bias)
        self.proj = nn.Linear(width, dim_out or dim, bias=proj_bias)

    def projections(self) -> List[str]:
        return ["q", "k", "v", "proj"]

    def sync_heads(self) -> None:
        """num_heads from the projections' width (after a compaction or a resize)."""
        self.num_heads = self.q.out_features // self.head_dim

    def attend(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
               is_causal: bool = False) -> torch.Tensor:
        b, n, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.q(x)), heads(self.k(x)), heads(self.v(x)), attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))

    def forward(self, x, *args, **kwargs):
        if self.flavour == "timm":
            return self.attend(x, kwargs.get("attn_mask"), kwargs.get("is_causal", False))
        key = args[0] if args else kwargs.get("key", x)
        if key is not x or kwargs.get("key_padding_mask") is not None:
            raise ValueError("HeadAttention computes self-attention only (query is key is value)")
        return self.attend(x, kwargs.get("attn_mask")), None

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        split_fused(state, prefix, self.flavour)
        super()._load_from_state_dict(state, prefix, *args, **kwargs)


def split_fused(state: Dict[str, torch.Tensor], prefix: str, flavour: str) -> None:
    """Rewrite, in place, one attention's fused entries of `state` (under `prefix`) as q/k/v/proj
    entries; a state dict already split is left as it is."""
    weight, bias, out = FUSED[flavour]
    if f"{prefix}{weight}" not in state:
        return
    for name, fused in ((".weight", state.pop(f"{prefix}{weight}")),
                        (".bias", state.pop(f"{prefix}{bias}", None))):
        if fused is not None:
            for part, chunk in zip("qkv", fused.chunk(3)):
                state[f"{prefix}{part}{name}"] = chunk
    if out != "proj.":
        for key in [k for k in state if k.startswith(f"{prefix}{out}")]:
            state[f"{prefix}proj.{key[len(prefix) + len(out):]}"] = state.pop(key)


def split_state(model: nn.Module, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A copy of `state` with the fused attention entries of every HeadAttention of `model`
    split (a state dict of the unconverted model loads into the converted one)."""
    state = dict(state)
    for name, m in model.named_modules():
        if isinstance(m, HeadAttention):
            split_fused(state, f"{name}." if name else "", m.flavour)
    return state


def from_torchvision(mha: nn.MultiheadAttention) -> HeadAttention:
    if not (mha.batch_first and mha._qkv_same_embed_dim and mha.bias_k is None
            and not mha.add_zero_attn):
        raise ValueError("only batch-first self-attention without bias_k/add_zero_attn")
    att = HeadAttention(mha.embed_dim, mha.num_heads, mha.head_dim,
                        bias=mha.in_proj_bias is not None,
                        proj_bias=mha.out_proj.bias is not None, dropout=mha.dropout)
    att.load_state_dict(mha.state_dict())
    return att.to(mha.in_proj_weight.device, mha.in_proj_weight.dtype)


def from_timm(m: nn.Module) -> Optional[HeadAttention]:
    """A plain timm Attention (no qk/scale norm, no gate), or None for other variants."""
    plain = all(isinstance(getattr(m, a, nn.Identity()), nn.Identity)
                for a in ("q_norm", "k_norm", "norm")) and getattr(m, "gate", None) is None
    if not plain or not isinstance(getattr(m, "qkv", None), nn.Linear):
        return None
    att = HeadAttention(m.qkv.in_features, m.num_heads, m.head_dim,
                        bias=m.qkv.bias is not None, proj_bias=m.proj.bias is not None,
                        dropout=m.attn_drop.p, flavour="timm", dim_out=m.proj.out_features)
    att.load_state_dict(m.state_dict())
    return att.to(m.qkv.weight.device, m.qkv.weight.dtype)


def convert(model: nn.Module) -> int:
    """Replace every torchvision MultiheadAttention and plain timm Attention of `model` by a
    HeadAttention computing the same; returns how many were replaced."""
    replaced = 0
    for name, m in list(model.named_modules()):
        att = None
        if isinstance(m, nn.MultiheadAttention):
            att = from_torchvision(m)
        elif type(m).__name__ == "Attention" and type(m).__module__.startswith("timm."):
            att = from_timm(m)
        if att is not None:
            if m.training is False:
                att.eval()
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, att)
            replaced += 1
    return replaced
