"""Compressed models under torch.compile on the CPU: one graph, no break inside pycomp layers."""
import pytest
import torch
from torch import nn

import pycomp

SPECS = [("int8", {"mode": "dynamic"}), ("int8", {"mode": "weight_only"}), ("int4", {"group_size": 32}),
         ("int4", {"group_size": 64, "symmetric": True})]


def _model():
    torch.manual_seed(0)
    # every conv form (padding, stride, groups) and odd K, so each layer's Python around its op is traced
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, groups=2),
                         nn.Flatten(), nn.Linear(8 * 3 * 3, 33), nn.ReLU(), nn.Linear(33, 5))


@pytest.mark.parametrize("spec,options", SPECS)
def test_dynamo_traces_each_compressed_model_in_one_graph(spec, options):
    small = pycomp.compress(_model(), spec, **options).eval()
    x = torch.randn(4, 3, 7, 7)
    explained = torch._dynamo.explain(small)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    compiled = torch.compile(small, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), small(x), rtol=0, atol=0)


def _mixed():
    """int8 W8A8 convs and int4 linears, from a recipe."""
    recipe = pycomp.Recipe.from_dict({"steps": [{"int8": {"skip": ["4", "6"]}}, {"int4": {"group_size": 32}}]})
    small = pycomp.compress(_model(), recipe).eval()
    assert [type(small[i]).__name__ for i in (0, 2, 4, 6)] == ["Int8Conv2d", "Int8Conv2d", "Int4Linear", "Int4Linear"]
    return small


def test_symbolic_batch_size():
    """dynamic=True traces the ops' fake impls with a symbolic M: one graph serves every batch size."""
    small = _mixed()
    torch._dynamo.reset()
    compiled = torch.compile(small, fullgraph=True, backend="aot_eager", dynamic=True)
    for batch in (4, 1, 5):
        x = torch.randn(batch, 3, 7, 7)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), small(x), rtol=0, atol=0)


def test_inductor_runs_a_mixed_int8_int4_model():
    """Compiled by inductor with fullgraph=True: the ops stay opaque calls, so the output matches eager
    up to inductor's fusion of the float ops around them."""
    small = _mixed()
    torch._dynamo.reset()
    compiled = torch.compile(small, fullgraph=True)
    x = torch.randn(4, 3, 7, 7)
    with torch.no_grad():
        want, got = small(x), compiled(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
