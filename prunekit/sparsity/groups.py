"""Channel groups: channels that can only be removed together, and their physical removal.

Removing output channel c of a conv also removes channel c of the BatchNorm after it and input
channel c of every layer that reads it; across a residual add, it removes c from every branch that
feeds the add. torch-pruning's DependencyGraph finds these couplings for any traced model
(residual adds, concatenations, depthwise convs, flatten -> linear), so a `ChannelGroup` is one of
its groups, re-expressed as parameter slices prunekit can mask.

Masking a channel zeroes every slice of it, BatchNorm weight *and* bias included: the masked model
then computes exactly what the compacted one does (a BN channel with only its weight zeroed would
still emit the constant β, which physical removal drops; NNI #2130). `compact` removes masked
channels for real with torch-pruning.

Attention heads are groups prunekit builds itself: torch-pruning couples a head projection's
single output features, which a head reshape cannot lose one by one. For every `HeadAttention`
the group's channels are its heads (q, k, v rows and proj columns, `head_dim` of each), and its
compaction slices the four Linears and updates `num_heads`.

A model torch-pruning cannot trace (its builder sets NO_CHANNEL_GROUPS: Swin) keeps the groups
prunekit can find without a trace: those heads, and the hidden units of every MLP (a Sequential
Linear -> activation with f(0) = 0 -> Linear). Without either it is refused in one line.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from prunekit.errors import ConfigError, first_line
from prunekit.sparsity import layernorm
from prunekit.sparsity.attention import HeadAttention
from prunekit.sparsity.layernorm import channel_masked, set_kept
from prunekit.sparsity.masks import MaskSet

log = logging.getLogger(__name__)

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)
# A model builder sets this attribute to the reason when its channel groups must not be traced
# (torch-pruning would exhaust memory on it, or fails inside).
NO_CHANNEL_GROUPS = "prunekit_no_channel_groups"
# What may sit between an MLP's two Linears: zero in, zero out (a masked unit stays silent).
ZERO_PRESERVING = (nn.GELU, nn.ReLU, nn.SiLU, nn.Dropout, nn.Identity)


def kept_counts(size: int, dense: int, multiple: int) -> List[int]:
    """The channel counts a group of `size` channels now (`dense` before pruning) may keep: the
    multiples of `multiple` up to `size`, and `size` itself while nothing is removed (every count
    from 1 when `multiple` is 1); `size` alone when no multiple fits."""
    if multiple <= 1:
        return list(range(1, size + 1))
    counts = list(range(multiple, size + 1, multiple))
    if size == dense and size not in counts:
        counts.append(size)
    return counts or [size]


def aligned_removal(n: int, size: int, dense: int, n_masked: int, multiple: int) -> int:
    """The number of a group's channels to remove nearest `n` that leaves an allowed count
    (`kept_counts`), and at least the `n_masked` already masked (masks only grow)."""
    if multiple <= 1:
        return n
    removals = [size - k for k in kept_counts(size, dense, multiple) if size - k >= n_masked]
    return min(removals, key=lambda r: (abs(r - n), r)) if removals else n_masked


class Role(enum.Enum):
    """What a group's channels are to a member's module: its outputs (a layer's output channels,
    or a depthwise conv's own), its inputs, or a norm layer's channels."""

    OUT = "out"
    IN = "in"
    NORM = "norm"

    @property
    def dim(self) -> int:
        """The weight dim the channels index: 1 for inputs, else 0."""
        return 1 if self is Role.IN else 0


@dataclass
class Member:
    module: str
    role: Role
    # positions[c]: indices of group channel c in this module's channel dim; a (channels, k)
    # tensor when every channel has k of them (nearly always), else a list of tensors
    positions: Union[torch.Tensor, List[torch.Tensor]]

    def take(self, channels: Sequence[int]) -> torch.Tensor:
        """The module's channel indices of these group channels, flattened."""
        if isinstance(self.positions, torch.Tensor):
            return self.positions[torch.as_tensor(channels, dtype=torch.long)].flatten()
        if len(channels) == 0:
            return torch.empty(0, dtype=torch.long)
        return torch.cat([self.positions[int(c)] for c in channels])

    def reduce(self, values: torch.Tensor, op: str, dim: int = 0) -> torch.Tensor:
        """`values` indexed by this module's channels along `dim` -> one value per group channel
        (op: sum, mean or all over each channel's positions)."""
        if isinstance(self.positions, torch.Tensor):
            pos = self.positions.to(values.device)
            picked = values.index_select(dim, pos.flatten()).unflatten(dim, tuple(pos.shape))
            return getattr(picked, op)(dim + 1)
        return torch.stack([getattr(values.index_select(dim, p.to(values.device)), op)(dim)
                            for p in self.positions], dim)


@dataclass
class ChannelGroup:
    root: str  # the layer whose output channels define the group's channel index
    members: List[Member]
    block: Optional[str] = None  # the residual block holding every member, if one does
    dense_size: int = 0
    heads: Optional[str] = None  # the HeadAttention whose heads the channels are, if they are
    manual: bool = False  # compacted by prunekit, not torch-pruning (heads, untraced, conv groups)

    @property
    def size(self) -> int:
        return len(self.members[0].positions)

    def member_names(self) -> List[str]:
        return [m.module for m in self.members]

    def outputs(self) -> List[Member]:
        """The members whose output channels are the group's (its filters)."""
        return [m for m in self.members if m.role is Role.OUT]

    def inputs(self) -> List[Member]:
        """The members that read the group's channels (their input columns)."""
        return [m for m in self.members if m.role is Role.IN]

    def norms(self) -> List[Member]:
        """The norm layers over the group's channels."""
        return [m for m in self.members if m.role is Role.NORM]

    def per_channel(self, tensors: Dict[str, torch.Tensor],
                    fn: Callable[[torch.Tensor], torch.Tensor],
                    role: Role = Role.OUT) -> torch.Tensor:
        """Σ over the members in `role` (default: outputs) of fn(the tensor's slices as rows),
        one float64 value per group channel: outputs' filters (rows of dim 0), inputs' columns
        (dim 1). `tensors` maps a module name to its weight, or to any tensor of that shape."""
        total = torch.zeros(self.size, dtype=torch.float64)
        for m in self.members:
            if m.role is role:
                t = tensors[m.module].detach()
                dim = role.dim
                rows = t.transpose(0, dim).reshape(t.shape[dim], -1)
                total += m.reduce(fn(rows).double().cpu(), "sum")
        return total


def _is_channel_layernorm(m: nn.Module) -> bool:
    return layernorm.supported(m)


def _stacked(positions: List[torch.Tensor]) -> Union[torch.Tensor, List[torch.Tensor]]:
    """Member positions: a (channels, k) tensor when every channel has k of them."""
    if len({len(p) for p in positions}) == 1:
        return torch.stack(positions)
    return positions


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


class ChannelGroups:
    """The prunable channel groups of a model (groups touching no excluded layer's outputs)."""

    def __init__(self, model: nn.Module, prunable: Dict[str, nn.Module],
                 example_input: torch.Tensor, blocks: Optional[List[str]] = None):
        self.model = model
        self.prunable = set(prunable)
        self.blocks = sorted(blocks or [], key=len, reverse=True)  # innermost first
        was_training = model.training
        model.eval()  # tracing in eval mode: a 1-image batch must not reach BatchNorm statistics
        # (torch-pruning traces through autograd: no torch.no_grad here)
        untraced = getattr(model, NO_CHANNEL_GROUPS, None)
        self.dg = None
        try:
            if not untraced:
                # imported here, not with prunekit: torch-pruning imports timm, and timm imports
                # wandb when it is installed, ~2 s of every process start that needs neither
                import torch_pruning as tp

                self.dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs=example_input, verbose=False)
        except Exception as e:  # torch-pruning cannot trace it: say so, in one line
            raise ConfigError(f"torch-pruning cannot trace the channel groups of this model "
                              f"({type(e).__name__}: {first_line(e)}): prune it with "
                              "method.granularity=unstructured or nm") from None
        finally:
            model.train(was_training)
        self._dense_sizes: Dict[str, int] = {}
        self.groups: List[ChannelGroup] = []
        self.refresh()
        if untraced and not self.groups:
            raise ConfigError(f"{untraced}: prune it with method.granularity=unstructured or nm")

    def state_dict(self) -> Dict[str, int]:
        """What a compaction leaves that the model does not show: each group's dense size."""
        return dict(self._dense_sizes)

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self._dense_sizes = dict(state)
        self.refresh()

    def _names(self) -> Dict[nn.Module, str]:
        return {m: n for n, m in self.model.named_modules()}

    def __iter__(self):
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> ChannelGroup:
        return self.groups[index]

    def index_of(self, root: str) -> int:
        """The position of the group whose channels `root`'s outputs define (the last built,
        where a merged conv-group group took a traced group's root)."""
        return max(i for i, g in enumerate(self.groups) if g.root == root)

    def by_root(self, root: str) -> ChannelGroup:
        """The group whose channels `root`'s outputs define."""
        return self.groups[self.index_of(root)]

    def refresh(self) -> None:
        """Re-read groups (after a compaction their channel counts and index maps change)."""
        names = self._names()
        excluded = [m for n, m in self.model.named_modules()
                    if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in self.prunable]
        head_dims = self._head_dims()
        groups = []
        traced = [] if self.dg is None else self.dg.get_all_groups(
            ignored_layers=excluded, root_module_types=(nn.Conv2d, nn.Linear))
        across_conv_groups = []
        for g in traced:
            group = self._convert(g, names, head_dims)
            if group is not None:
                (across_conv_groups if self._grouped_convs(group) else groups).append(group)
        groups += self._merge_conv_groups(across_conv_groups)
        groups += self._head_groups()
        if self.dg is None:
            groups += self._mlp_groups()
        for group in groups:
            group.dense_size = self._dense_sizes.setdefault(group.root, group.size)
        self.groups = groups
        for name in self._layernorms():
            channel_masked(self.model.get_submodule(name))

    def _layernorms(self) -> List[str]:
        return sorted({m.module for g in self.groups for m in g.norms()
                       if _is_channel_layernorm(self.model.get_submodule(m.module))})

    def sync_norms(self, masks: MaskSet) -> None:
        """The kept channels of the groups' LayerNorms, from their weight masks."""
        for name in self._layernorms():
            set_kept(self.model.get_submodule(name), masks.get(f"{name}.weight"))

    def _attentions(self) -> Dict[str, HeadAttention]:
        """The HeadAttentions whose four projections are all prunable."""
        return {n: m for n, m in self.model.named_modules() if isinstance(m, HeadAttention)
                and all(f"{n}.{p}" in self.prunable for p in m.projections())}

    def _head_dims(self) -> Dict[str, Role]:
        """Every head projection's layer -> the role of its head dim (q/k/v: outputs, proj:
        inputs). A traced group that cuts a head dim feature by feature is not one prunekit
        keeps."""
        dims = {}
        for n, m in self.model.named_modules():
            if isinstance(m, HeadAttention):
                dims.update({f"{n}.{p}": Role.IN if p == "proj" else Role.OUT
                             for p in m.projections()})
        return dims

    def _head_groups(self) -> List[ChannelGroup]:
        groups = []
        for name, att in self._attentions().items():
            positions = torch.arange(att.num_heads * att.head_dim).view(att.num_heads,
                                                                        att.head_dim)
            members = [Member(f"{name}.{p}", Role.IN if p == "proj" else Role.OUT, positions)
                       for p in ("q", "k", "v", "proj")]
            block = next((b for b in self.blocks if name.startswith(b + ".")), None)
            groups.append(ChannelGroup(members[0].module, members, block, heads=name,
                                       manual=True))
        return groups

    def _mlp_groups(self) -> List[ChannelGroup]:
        """Without a trace: the hidden units of every Linear -> f(0)=0 ... -> Linear run inside
        a Sequential (an MLP)."""
        groups = []
        for name, seq in self.model.named_modules():
            if not isinstance(seq, nn.Sequential):
                continue
            layers = list(seq)
            for i, first in enumerate(layers):
                j = next((k for k in range(i + 1, len(layers))
                          if not isinstance(layers[k], ZERO_PRESERVING)), None)
                if not isinstance(first, nn.Linear) or j is None or \
                        not isinstance(layers[j], nn.Linear):
                    continue
                prefix = f"{name}." if name else ""
                up, down = f"{prefix}{i}", f"{prefix}{j}"
                if up not in self.prunable or down not in self.prunable:
                    continue
                units = torch.arange(first.out_features).view(-1, 1)
                block = next((b for b in self.blocks if name.startswith(b + ".")), None)
                groups.append(ChannelGroup(up, [Member(up, Role.OUT, units),
                                                Member(down, Role.IN, units)], block,
                                           manual=True))
        return groups

    def _grouped_convs(self, group: ChannelGroup) -> List[Member]:
        """The group's members that are grouped (not depthwise) convs."""
        out = []
        for m in group.members:
            conv = self.model.get_submodule(m.module)
            if isinstance(conv, nn.Conv2d) and conv.groups > 1 and not _is_depthwise(conv):
                out.append(m)
        return out

    def _merge_conv_groups(self, traced: List[ChannelGroup]) -> List[ChannelGroup]:
        """A grouped conv (ResNeXt, RegNet) reads its input and writes its output in `groups`
        slices: one channel alone cannot go, a whole conv group can. The traced group feeding
        it (A: the conv as a reader) and the one it roots (B) become one group whose channels
        are the conv's groups: group g is A's channels read by g, and B's written by g. Groups
        of any other shape are left out (not pruned)."""
        feeding, rooted = {}, {}
        for group in traced:
            convs = self._grouped_convs(group)
            if len(convs) != 1:
                continue
            m = convs[0]
            if m.role is Role.OUT and group.root == m.module:
                rooted[m.module] = group
            elif m.role is Role.IN:
                feeding[m.module] = group
        merged = []
        for name, b in rooted.items():
            a = feeding.get(name)
            conv = self.model.get_submodule(name)
            if a is None or a.block != b.block:
                continue
            chans = []
            for group, width, own in ((a, conv.in_channels // conv.groups, Role.IN),
                                      (b, conv.out_channels // conv.groups, Role.OUT)):
                pos = next(m.positions for m in group.members if m.module == name
                           and m.role is own)
                if not isinstance(pos, torch.Tensor) or pos.shape[1] != 1:
                    break
                slot = pos[:, 0] // width  # each channel's conv group
                per = [torch.nonzero(slot == g).flatten() for g in range(conv.groups)]
                if any(len(p) != width for p in per):
                    break
                chans.append((group, torch.stack(per)))
            if len(chans) != 2:
                continue
            members = [Member(m.module, m.role, _stacked([m.take(c.tolist()) for c in per]))
                       for group, per in chans for m in group.members
                       if not (m.module == name and m.role is Role.IN)]
            if len({(m.module, m.role) for m in members}) == len(members):
                merged.append(ChannelGroup(a.root, members, a.block, manual=True))
        return merged

    def _convert(self, g, names, head_dims: Dict[str, Role]) -> Optional[ChannelGroup]:
        root_module = g[0].dep.target.module
        root = names.get(root_module)
        size = len(g[0].idxs)
        members: List[Member] = []
        for item in g:
            module = item.dep.target.module
            name = names.get(module)
            if name is None:  # a traced op (add, relu, flatten): no parameters to slice
                continue
            is_out = self.dg.is_out_channel_pruning_fn(item.dep.handler)
            is_out = is_out or _is_depthwise(module)
            if head_dims.get(name) is (Role.OUT if is_out else Role.IN):
                return None
            if isinstance(module, NORM_TYPES) or _is_channel_layernorm(module):
                role = Role.NORM
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                role = Role.OUT if is_out else Role.IN
            elif any(True for _ in module.parameters(recurse=False)):
                log.debug("group %s skipped: %s (%s) cannot be masked", root, name,
                          type(module).__name__)
                return None
            else:
                continue
            idx = torch.as_tensor([int(i) for i in item.idxs], dtype=torch.long)
            root_idx = torch.as_tensor([int(i) for i in item.root_idxs], dtype=torch.long)
            order = torch.argsort(root_idx, stable=True)
            counts = torch.bincount(root_idx, minlength=size).tolist()
            if counts and min(counts) == max(counts):
                positions = idx[order].view(size, counts[0])
            else:
                positions = list(torch.split(idx[order], counts))
            if any(m.module == name and m.role is role for m in members):
                continue
            members.append(Member(name, role, positions))
        if root is None or not members or members[0].module != root:
            return None
        block = next((b for b in self.blocks
                      if all(m.module.startswith(b + ".") for m in members)), None)
        return ChannelGroup(root, members, block)

    def norm_after(self, conv: str) -> Optional[str]:
        """The BatchNorm that reads `conv`'s output directly (its conv+BN pair), from the traced
        graph rather than from names."""
        if self.dg is None:
            return None
        node = self.dg.module2node.get(self.model.get_submodule(conv))
        if node is None:
            return None
        names = self._names()
        return next((names[o.module] for o in node.outputs
                     if isinstance(o.module, NORM_TYPES) and o.module in names), None)

    # ------------------------------------------------------------------ masks
    def member_param_masks(self, group: ChannelGroup,
                           channels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Masks (1 keep, 0 prune) for every parameter the given group channels touch."""
        masks: Dict[str, torch.Tensor] = {}
        chans = channels.tolist()
        for m in group.members:
            module = self.model.get_submodule(m.module)
            pos = m.take(chans)
            for pname, p in module.named_parameters(recurse=False):
                mask = torch.ones_like(p, dtype=torch.bool)
                if m.role is Role.IN:
                    if pname != "weight":
                        continue
                    mask[:, pos] = False
                else:  # out / norm: rows of weight, entries of bias
                    mask[pos] = False
                masks[f"{m.module}.{pname}"] = mask
        return masks

    def mask_channels(self, group: ChannelGroup, channels: torch.Tensor, masks: MaskSet) -> None:
        for name, mask in self.member_param_masks(group, channels).items():
            masks.restrict(name, mask)
        for m in group.members:
            if m.role is Role.NORM:
                set_kept(self.model.get_submodule(m.module), masks.get(f"{m.module}.weight"))

    def masked_channels(self, group: ChannelGroup, masks: MaskSet) -> torch.Tensor:
        """Bool per group channel: removed by a mask (the root layer's rows are all zero)."""
        root = group.members[0]
        mask = masks.get(f"{root.module}.weight")
        if mask is None:
            return torch.zeros(group.size, dtype=torch.bool)
        dead_rows = mask.reshape(mask.shape[0], -1).eq(0).all(1).cpu()
        return root.reduce(dead_rows, "all")

    # ------------------------------------------------------------------ compaction
    def compact(self, masks: MaskSet) -> int:
        """Physically remove every masked channel; returns how many channels went. The masks of
        the touched parameters are sliced as the parameters are, so what they mask in the
        channels that stay (e.g. a reader's pruned columns) stays masked; masks left all ones are
        dropped, and `masks` is rebound to the model's new parameters."""
        plans = []
        for group in self.groups:
            dead = torch.nonzero(self.masked_channels(group, masks)).flatten()
            if len(dead):
                plans.append((group, dead))
        if not plans:
            return 0
        removals = self._removals(plans)
        sliced = self._sliced_masks(masks, removals)
        for group, dead in plans:
            if group.manual:
                self._slice_out(group, dead)
                continue
            root = self.model.get_submodule(group.root)
            # Indices in root space: the root member's own positions of the dead channels.
            idxs = group.members[0].take(dead.tolist()).tolist()
            pruner = self.dg.get_pruner_of_module(root)
            self.dg.get_pruning_group(root, pruner.prune_out_channels, idxs=sorted(idxs)).prune()
        masks.rebind(self.model)
        masks.drop(list(removals))
        for key, mask in sliced.items():
            masks.set(key, mask)
        self.refresh()
        self.sync_norms(masks)
        return sum(len(dead) for _, dead in plans)

    def _removals(self, plans) -> Dict[str, List]:
        """parameter -> [(dim, indices removed)], in the parameter's index space before
        compaction (each dim of a parameter belongs to one group: removals never overlap)."""
        removals: Dict[str, List] = {}
        for group, dead in plans:
            for m in group.members:
                pos = m.take(dead.tolist())
                for pname, _ in self.model.get_submodule(m.module).named_parameters(recurse=False):
                    if m.role is Role.IN and pname != "weight":
                        continue
                    removals.setdefault(f"{m.module}.{pname}", []).append(
                        (m.role.dim, pos))
        return removals

    @staticmethod
    def _sliced_masks(masks: MaskSet, removals: Dict[str, List]) -> Dict[str, torch.Tensor]:
        """The masks of the touched parameters, sliced as the parameters will be (those left
        all ones are not kept)."""
        sliced = {}
        for key, cuts in removals.items():
            mask = masks.get(key)
            if mask is None:
                continue
            # One dim may lose channels of several groups (a concatenation's reader: DenseNet,
            # GoogLeNet): every cut is in the dense index space, so they are applied together.
            keep = {dim: torch.ones(mask.shape[dim], dtype=torch.bool) for dim, _ in cuts}
            for dim, pos in cuts:
                keep[dim][pos] = False
            for dim, kept in keep.items():
                mask = mask.index_select(dim, torch.nonzero(kept).flatten().to(mask.device))
            if not bool(mask.all()):
                sliced[key] = mask
        return sliced

    def _slice_out(self, group: ChannelGroup, dead: torch.Tensor) -> None:
        """Remove the dead channels of a group prunekit compacts itself (heads; untraced MLPs;
        conv groups): rows of `out` members and norms (their buffers too), columns of `in`
        members; size attributes, a grouped conv's `groups` and an attention's `num_heads`
        follow."""
        for m in group.members:
            layer = self.model.get_submodule(m.module)
            dim = m.role.dim
            kept = torch.ones(layer.weight.shape[dim], dtype=torch.bool)
            kept[m.take(dead.tolist())] = False
            idx = torch.nonzero(kept).flatten().to(layer.weight.device)
            for pname, p in list(layer.named_parameters(recurse=False)):
                if m.role is not Role.IN or pname == "weight":
                    setattr(layer, pname, nn.Parameter(p.data.index_select(dim, idx)))
            for bname, b in list(layer.named_buffers(recurse=False)):
                if m.role is not Role.IN and b is not None and b.dim() > 0:
                    layer.register_buffer(bname, b.index_select(0, idx))
            n = len(idx)
            if isinstance(layer, nn.Linear):
                layer.out_features, layer.in_features = layer.weight.shape
            elif isinstance(layer, nn.Conv2d) and m.role is Role.IN:
                layer.in_channels = n
            elif isinstance(layer, nn.Conv2d):  # a grouped conv loses whole conv groups
                if layer.groups > 1:
                    layer.groups = n // (layer.out_channels // layer.groups)
                    layer.in_channels = layer.groups * layer.weight.shape[1]
                layer.out_channels = n
            elif isinstance(layer, NORM_TYPES):
                layer.num_features = n
        if group.heads is not None:
            self.model.get_submodule(group.heads).sync_heads()
