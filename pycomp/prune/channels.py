"""Structured channel pruning: remove whole filters and return a smaller dense model.

The model is traced with torch.fx and every tensor's channels are followed through
the graph. Channels that must be removed together form a group:

- the output channels of an nn.Conv2d (filters) or out_features of an nn.Linear;
- everything that only carries them along: activations, dropout, pooling, upsampling,
  nn.BatchNorm1d/2d (sliced with them), reductions over other dimensions, and
  flatten(1), after which each channel owns a block of H*W consecutive features
  (the next nn.Linear loses those column blocks);
- element-wise arithmetic of two such tensors (a residual add, a gating multiply)
  joins both sides into one group: they lose the same channels.

Each group keeps its round((1 - ratio) * C) best channels (at least one), scored
jointly: every producing layer gives each channel a score, |gamma| of the
batch norm right after it when it has one (under batch norm the filter's own
norm says little), else the L1 norm of the filter, and the scores are divided
by their mean per layer and summed. Groups that reach the model's output
(directly, or through ops that cannot be followed, like logits -> softmax) or
that a skipped layer produces keep all their channels. Any other operation on a
prunable tensor (view/reshape, cat, indexing, softmax over channels, layer norm,
grouped convs, an unknown module, a tensor attribute used as an operand...) might
mix channels, so it stops the pruning with an error naming the node, and nothing
is changed. A pruned channel's constant output (e.g. a batch norm's beta) is
dropped, not folded into the next layer: exact only for channels that were
already zero, an approximation that fine-tuning repairs otherwise.
"""
from __future__ import annotations

import copy
import fnmatch
import math
import numbers
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp

from pycomp.nn.base import put_layer
from pycomp.prune.mask import skip_list

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
                        nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Identity, nn.Dropout,
                        nn.Dropout1d, nn.Dropout2d)
_ELEMENTWISE_FUNCTIONS = {F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish, F.hardswish,
                          F.hardsigmoid, F.hardtanh, F.softplus, F.sigmoid, F.tanh, F.dropout, F.dropout1d,
                          F.dropout2d, torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.abs, torch.neg}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "abs", "neg", "contiguous", "clone", "detach", "to",
                        "float", "half", "bfloat16"}
_SPATIAL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample)
_SPATIAL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.interpolate}
_ARITH_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
                    operator.imul, torch.add, torch.sub, torch.mul, torch.div}
_ARITH_METHODS = {"add", "sub", "mul", "div", "add_", "sub_", "mul_", "div_"}
_REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax}
_REDUCE_METHODS = {"mean", "sum", "amax"}
_METADATA_METHODS = {"size", "dim"}
_UNKNOWN = object()  # a rule's answer for an op it cannot follow (None means: no prunable channels here)


@dataclass(frozen=True)
class _Chan:
    """Where a tensor's prunable channels are: group id, the dimension, entries per channel along it."""

    group: int
    dim: int
    block: int = 1


@dataclass
class ChannelGroup:
    """Channels that are pruned together, and every layer that touches them.

    producers: layers whose outputs are these channels (nn.Conv2d filters, nn.Linear out_features).
    consumers: layers reading them as inputs. norms: batch norms over them.
    blocks: {consumer or norm: its input entries per channel} (H*W after a flatten, else 1).
    fixed: why the group keeps all its channels (None: it is pruned).
    keep: the channel indices kept, ascending (None until planned, or when fixed).
    """

    channels: int
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    blocks: dict[str, int] = field(default_factory=dict)
    fixed: str | None = None
    keep: list[int] | None = None


class _NamingTracer(fx.Tracer):
    """fx's tracer, remembering the innermost module it was tracing when tracing failed."""

    failed_in: str | None = None

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self.path_of_module(m)
            raise


def _trace(model: nn.Module, example_input) -> fx.GraphModule:
    tracer = _NamingTracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:
        where = f"module '{tracer.failed_in}'" if tracer.failed_in else f"{type(model).__name__}.forward"
        raise ValueError(f"prune_channels: torch.fx cannot trace {where} ({type(e).__name__}: {e}); channel "
                         "dependencies need a traceable forward (no data-dependent control flow)") from e
    gm = fx.GraphModule(model, graph)
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    flags = {m: m.training for m in model.modules()}
    model.eval()  # shape propagation runs the model: batch-norm statistics must not move
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    except Exception as e:
        raise ValueError(f"prune_channels: the model failed on example_input: {e}") from e
    finally:
        for m, training in flags.items():
            m.train(training)
    return gm


def _shape(arg) -> tuple[int, ...] | None:
    meta = arg.meta.get("tensor_meta") if isinstance(arg, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"node '{node.name}' (module '{node.target}', {type(modules[node.target]).__name__})"
    if node.op == "call_method":
        return f"node '{node.name}' (method .{node.target}())"
    return f"node '{node.name}' ({node.op} {getattr(node.target, '__name__', node.target)})"


def _arg(node: fx.Node, index: int, name: str, default):
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


class _Analysis:
    """One pass over the traced graph: groups (union-find), each layer's role, and the uses it cannot follow."""

    def __init__(self, gm: fx.GraphModule, skip: list[str]):
        self.modules = dict(gm.named_modules())
        self.skip = skip
        self.parent: list[int] = []
        self.groups: list[ChannelGroup] = []
        self.out_group: dict[str, int] = {}  # producer layer -> group of its outputs
        self.in_group: dict[str, _Chan] = {}  # consumer layer or norm -> channels of its input
        self.bn_of: dict[str, str] = {}  # producer -> the batch norm right after it (scores its channels)
        self.unknown: list[tuple[int, str]] = []  # (group, node description) uses that may mix channels
        self.env: dict[fx.Node, _Chan | None] = {}
        self.origin: dict[fx.Node, str | None] = {}  # the one producer a tensor comes from, through no merge
        # Groups a tensor carries through ops that cannot be followed, until a layer makes new channels:
        # {group: the first such op}. Groups that reach the output this way (logits -> softmax) just stay whole.
        self.opaque: dict[fx.Node, dict[int, str]] = {}
        for node in gm.graph.nodes:
            self._visit(node)

    # --------------------------------------------------------------------- groups
    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def _new(self, channels: int) -> int:
        self.parent.append(len(self.parent))
        self.groups.append(ChannelGroup(channels))
        return len(self.parent) - 1

    def _union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.groups[a].fixed = self.groups[a].fixed or self.groups[b].fixed
        return a

    def _fix(self, g: int, reason: str) -> None:
        root = self.groups[self.find(g)]
        root.fixed = root.fixed or reason

    # --------------------------------------------------------------------- roles
    def _produce(self, name: str, channels: int, dim: int) -> _Chan:
        g = self.out_group.get(name)
        if g is None:  # a layer called twice produces one group
            g = self.out_group[name] = self._new(channels)
            if any(fnmatch.fnmatchcase(name, p) for p in self.skip):
                self._fix(g, f"produced by skipped layer '{name}'")
        return _Chan(g, dim)

    def _consume(self, name: str, chan: _Chan) -> None:
        if name in self.in_group:  # a layer called twice: both inputs lose the same channels
            self._union(self.in_group[name].group, chan.group)
            if self.in_group[name].block != chan.block:
                raise ValueError(f"prune_channels: layer '{name}' is called on inputs with different layouts")
        else:
            self.in_group[name] = chan

    def _unknown(self, node: fx.Node, inputs: Iterable) -> None:
        desc = _describe(node, self.modules)
        for a in inputs:
            if self.env.get(a) is not None:
                self.unknown.append((self.env[a].group, desc))
                self.opaque[node].setdefault(self.env[a].group, desc)

    # --------------------------------------------------------------------- the walk
    def _visit(self, node: fx.Node) -> None:
        self.env[node], self.origin[node] = None, None
        inputs = node.all_input_nodes
        self.opaque[node] = {g: desc for a in inputs for g, desc in self.opaque[a].items()}
        if node.op in ("placeholder", "get_attr"):
            return
        if node.op == "output":
            for a in inputs:
                if self.env.get(a) is not None:
                    self._fix(self.env[a].group, "reaches the model's output")
            for g, desc in self.opaque[node].items():
                self._fix(g, f"reaches the model's output through {desc}")
            return
        src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        chan, shape = (self.env.get(src), _shape(src)) if src is not None else (None, None)
        out = self._rule(node, src, chan, shape)
        if out is _UNKNOWN:
            self._unknown(node, inputs)
            out = None
        elif node.op == "call_module" and node.target in self.out_group:
            self.opaque[node] = {}  # a layer's outputs are new channels
        self.env[node] = out

    def _pass(self, node: fx.Node, src: fx.Node, chan: _Chan | None) -> _Chan | None:
        self.origin[node] = self.origin.get(src)
        return chan

    def _rule(self, node, src, chan, shape):  # returns the output's _Chan, None, or _UNKNOWN
        if node.op == "call_module":
            return self._module_rule(node, src, chan, shape, self.modules[node.target])
        target = node.target
        if node.op == "call_method" and target in _METADATA_METHODS or target in (getattr, len):
            return None
        if node.op == "call_method" and target in _ELEMENTWISE_METHODS or target in _ELEMENTWISE_FUNCTIONS:
            return self._pass(node, src, chan)
        if target in _SPATIAL_FUNCTIONS:
            indices_at = {F.max_pool2d: 6, F.adaptive_max_pool2d: 2}.get(target)
            returns_indices = indices_at is not None and _arg(node, indices_at, "return_indices", False)
            if chan is None or (chan.dim == 1 and chan.block == 1 and len(shape) == 4 and not returns_indices):
                return self._pass(node, src, chan)
            return _UNKNOWN
        if node.op == "call_method" and target == "flatten" or target is torch.flatten:
            return self._flatten(node, src, chan, shape, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
        if node.op == "call_method" and target in _REDUCE_METHODS or target in _REDUCE_FUNCTIONS:
            return self._reduce(node, chan, shape)
        if node.op == "call_method" and target in _ARITH_METHODS or target in _ARITH_FUNCTIONS:
            return self._merge(node)
        return _UNKNOWN

    def _module_rule(self, node, src, chan, shape, module):
        name, kind = node.target, type(module)
        if kind is nn.Conv2d and module.groups == 1:
            if chan is not None:
                if chan.dim != 1 or chan.block != 1:
                    return _UNKNOWN
                self._consume(name, chan)
            self.origin[node] = name
            return self._produce(name, module.out_channels, 1)
        if kind is nn.Linear:
            if chan is not None:
                if chan.dim != len(shape) - 1:
                    return _UNKNOWN
                self._consume(name, chan)
            self.origin[node] = name
            return self._produce(name, module.out_features, len(_shape(node)) - 1)
        if kind in (nn.BatchNorm1d, nn.BatchNorm2d):
            if chan is None:
                return None
            if chan.dim != 1:
                return _UNKNOWN
            self._consume(name, chan)
            producer = self.origin.get(src)
            if producer is not None:
                self.bn_of.setdefault(producer, name)
            return chan
        if kind in _ELEMENTWISE_MODULES:
            return self._pass(node, src, chan)
        if kind in _SPATIAL_MODULES:
            if chan is None or (chan.dim == 1 and chan.block == 1 and len(shape) == 4
                                and not getattr(module, "return_indices", False)):
                return self._pass(node, src, chan)
            return _UNKNOWN
        if kind is nn.Flatten:
            return self._flatten(node, src, chan, shape, module.start_dim, module.end_dim)
        return _UNKNOWN

    def _flatten(self, node, src, chan, shape, start: int, end: int):
        if chan is None:
            return None
        start, end = start % len(shape), end % len(shape)
        if end < chan.dim:
            return _Chan(chan.group, chan.dim - (end - start), chan.block)
        if start > chan.dim:
            return self._pass(node, src, chan)
        if start == chan.dim:  # channels lead the flattened range: each owns a block of the rest
            self.origin[node] = self.origin.get(src)
            return _Chan(chan.group, start, chan.block * math.prod(shape[start + 1:end + 1]))
        return _UNKNOWN

    def _reduce(self, node, chan, shape):
        if chan is None:
            return None
        dims = _arg(node, 1, "dim", None)
        dims = [dims] if isinstance(dims, int) else dims
        if not dims or not all(isinstance(d, int) for d in dims):
            return _UNKNOWN
        dims = {d % len(shape) for d in dims}
        if chan.dim in dims:
            return _UNKNOWN
        keepdim = _arg(node, 2, "keepdim", False)
        return _Chan(chan.group, chan.dim if keepdim else chan.dim - sum(d < chan.dim for d in dims), chan.block)

    def _merge(self, node):
        tensors = [a for a in node.all_input_nodes if _shape(a) is not None]
        chans = [self.env.get(a) for a in tensors]
        if all(c is None for c in chans):
            return None
        first = next(c for c in chans if c is not None)
        shapes = [_shape(a) for a in tensors]
        if any(c is None or (c.dim, c.block) != (first.dim, first.block) for c in chans) \
                or any(len(s) != len(shapes[0]) or s[first.dim] != shapes[0][first.dim] for s in shapes):
            return _UNKNOWN
        g = first.group
        for c in chans:
            g = self._union(g, c.group)
        return _Chan(g, first.dim, first.block)


def _scores(group: ChannelGroup, analysis: _Analysis, modules: dict[str, nn.Module]) -> Tensor:
    total = 0
    for name in group.producers:
        bn_name = analysis.bn_of.get(name)
        if bn_name in group.norms and modules[bn_name].affine:
            s = modules[bn_name].weight.detach().abs().float()
        else:
            w = modules[name].weight.detach()
            s = w.abs().float().reshape(w.shape[0], -1).sum(1)
        total = total + s / s.mean().clamp_min(1e-12)
    return total


def plan_channels(model: nn.Module, ratio: float = 0.5, *, example_input, skip: str | Iterable[str] = (),
                  round_to: int = 1) -> list[ChannelGroup]:
    """The channel groups of `model` and, for each prunable one, the channels `prune_channels` keeps.

    Nothing is changed; raises ValueError (naming the module or node) when the dependencies cannot be
    resolved. See `prune_channels` for the arguments.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0 <= ratio < 1:
        raise ValueError(f"prune_channels: ratio must be a number in [0, 1), got {ratio!r}")
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"prune_channels: round_to must be a positive int, got {round_to!r}")
    skip = skip_list(skip)
    gm = _trace(model, example_input)
    analysis = _Analysis(gm, skip)
    for name, g in analysis.out_group.items():
        analysis.groups[analysis.find(g)].producers.append(name)
    for name, chan in analysis.in_group.items():
        group = analysis.groups[analysis.find(chan.group)]
        (group.norms if isinstance(analysis.modules[name], nn.modules.batchnorm._BatchNorm) else group.consumers
         ).append(name)
        group.blocks[name] = chan.block
    for g, desc in analysis.unknown:
        group = analysis.groups[analysis.find(g)]
        if group.fixed is None:
            raise ValueError(f"prune_channels: cannot follow the channels of {', '.join(group.producers)} through "
                             f"{desc}: it is not known to keep channels apart. Add the layer(s) to skip= to keep "
                             "their channels, or rewrite the op (e.g. flatten(1) instead of view/reshape)")
    roots = [analysis.groups[i] for i in range(len(analysis.parent)) if analysis.find(i) == i]
    for group in roots:
        n_keep = max(1, group.channels - round(ratio * group.channels))
        n_keep = min(group.channels, -(-n_keep // round_to) * round_to)
        if group.fixed is None and n_keep < group.channels:
            order = _scores(group, analysis, analysis.modules).argsort(descending=True, stable=True)
            group.keep = sorted(order[:n_keep].tolist())
    return roots


def _index(keep: list[int], block: int, device) -> Tensor:
    """Channel indices -> the indices of their entries when each channel owns `block` consecutive ones."""
    idx = torch.tensor(keep, device=device)
    return (idx[:, None] * block + torch.arange(block, device=device)).flatten()


def _rebuilt(module: nn.Module, out_idx: Tensor | None, in_idx: Tensor | None) -> nn.Module:
    """A new nn.Conv2d / nn.Linear with the kept output channels (out_idx) and inputs (in_idx)."""
    w, bias = module.weight.detach(), module.bias
    if out_idx is not None:
        w, bias = w[out_idx], (bias.detach()[out_idx] if bias is not None else None)
    if in_idx is not None:
        w = w[:, in_idx]
    factory = dict(device=w.device, dtype=w.dtype)
    if isinstance(module, nn.Conv2d):
        new = nn.Conv2d(w.shape[1], w.shape[0], module.kernel_size, module.stride, module.padding, module.dilation,
                        1, bias is not None, module.padding_mode, **factory)
    else:
        new = nn.Linear(w.shape[1], w.shape[0], bias is not None, **factory)
    with torch.no_grad():
        new.weight.copy_(w)
        new.weight.requires_grad_(module.weight.requires_grad)
        if bias is not None:
            new.bias.copy_(bias)
            new.bias.requires_grad_(module.bias.requires_grad)
    return new.train(module.training)


def _rebuilt_norm(bn: nn.modules.batchnorm._BatchNorm, idx: Tensor) -> nn.Module:
    """A new batch norm of the same type over the kept features `idx`."""
    new = type(bn)(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats, device=idx.device,
                   dtype=next(bn.parameters(), bn.running_mean).dtype)
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight[idx])
            new.bias.copy_(bn.bias[idx])
            new.weight.requires_grad_(bn.weight.requires_grad)
            new.bias.requires_grad_(bn.bias.requires_grad)
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean[idx])
            new.running_var.copy_(bn.running_var[idx])
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.train(bn.training)


def _device(module: nn.Module) -> torch.device:
    return next(iter([*module.parameters(), *module.buffers()])).device


def prune_channels(model: nn.Module, ratio: float = 0.5, *, example_input, skip: str | Iterable[str] = (),
                   round_to: int = 1) -> nn.Module:
    """A copy of `model` with `ratio` of the channels of every prunable group removed; the original is untouched.

    model: traceable by torch.fx; its nn.Conv2d (groups=1), nn.Linear and nn.BatchNorm1d/2d layers are
        replaced by new, smaller ones; the copy keeps the model's class and forward.
    ratio: fraction of each group's channels removed, in [0, 1); each group keeps
        C - round(ratio * C) channels, at least one. FLOPs of a layer between two pruned groups
        fall by about (1 - ratio)^2.
    example_input: a tensor (or tuple of them) the model accepts; it sizes the flatten blocks.
    skip: fnmatch patterns of layers whose output channels are kept (their inputs may still shrink
        when the layer before them is pruned).
    round_to: each group keeps a multiple of this many channels (rounded up, at most all of them), since
        the CPU and GPU convolution kernels run fastest on channel counts that fill their vectors (8 or 16).
    Raises ValueError, changing nothing, when fx cannot trace the model or an operation might mix the
    channels of a prunable group (naming the module or node). See the module docstring for the scoring;
    `plan_channels` shows the groups without pruning, `pycomp.prune.count_flops` measures the result.
    """
    work = copy.deepcopy(model)
    groups = plan_channels(work, ratio, example_input=example_input, skip=skip, round_to=round_to)
    modules = dict(work.named_modules())
    out_idx: dict[str, Tensor] = {}  # layer -> kept output channels; for a batch norm, kept features
    in_idx: dict[str, Tensor] = {}
    for group in groups:
        if group.keep is None:
            continue
        for name in group.producers:
            out_idx[name] = _index(group.keep, 1, _device(modules[name]))
        for name in group.consumers:
            in_idx[name] = _index(group.keep, group.blocks[name], _device(modules[name]))
        for name in group.norms:
            out_idx[name] = _index(group.keep, group.blocks[name], _device(modules[name]))
    for name in sorted(set(out_idx) | set(in_idx)):
        module = modules[name]
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            new = _rebuilt_norm(module, out_idx[name])
        else:
            new = _rebuilt(module, out_idx.get(name), in_idx.get(name))
        put_layer(work, name, new)
    return work
