"""Channel pruning: dependency groups, exact surgery, errors that change nothing, FLOPs."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pycomp.prune import count_flops, flops_by_layer, plan_channels, prune_channels


class ResNetLet(nn.Module):
    """A stem, one residual block (the add joins stem and conv_b channels), a conv without BN, a pool,
    a flatten into a Linear, a Linear with BatchNorm1d, and the head."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv_a, self.bn_a = nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv_b, self.bn_b = nn.Conv2d(16, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv_c = nn.Conv2d(8, 12, 3, padding=1)
        self.fc1, self.bn1 = nn.Linear(12 * 4 * 4, 20), nn.BatchNorm1d(20)
        self.head = nn.Linear(20, 5)

    def forward(self, x):
        y = F.relu(self.bn0(self.stem(x)))
        z = F.relu(self.bn_a(self.conv_a(y)))
        y = F.relu(y + self.bn_b(self.conv_b(z)))
        w = F.max_pool2d(F.relu(self.conv_c(y)), 2)
        return self.head(F.relu(self.bn1(self.fc1(torch.flatten(w, 1)))))


# Channels each producer leaves dead (all-zero after its norm), half of each group.
DEAD = {"stem": [0, 3, 5, 6], "conv_a": [1, 2, 4, 8, 9, 10, 13, 15], "conv_c": [0, 2, 4, 6, 7, 11],
        "fc1": [1, 3, 5, 7, 11, 12, 14, 16, 17, 19]}


def _model_with_dead_channels():
    torch.manual_seed(0)
    model = ResNetLet()
    with torch.no_grad():
        for bn in (model.bn0, model.bn_a, model.bn_b, model.bn1):  # non-trivial statistics
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
        for conv, bn in [("stem", "bn0"), ("conv_b", "bn0"), ("conv_a", "bn_a"), ("conv_c", None), ("fc1", "bn1")]:
            dead = DEAD["stem" if conv == "conv_b" else conv]
            layer = getattr(model, conv)
            layer.weight[dead] = 0
            if layer.bias is not None:
                layer.bias[dead] = 0
            if bn is not None:
                for norm in ([model.bn0, model.bn_b] if bn == "bn0" else [getattr(model, bn)]):
                    norm.weight[dead] = 0
                    norm.bias[dead] = 0
    return model.eval()


def test_groups_follow_residual_adds_flatten_and_norms():
    groups = plan_channels(ResNetLet(), 0.5, example_input=torch.randn(2, 3, 8, 8))
    by_producers = {tuple(sorted(g.producers)): g for g in groups}
    assert set(by_producers) == {("conv_b", "stem"), ("conv_a",), ("conv_c",), ("fc1",), ("head",)}
    res = by_producers["conv_b", "stem"]
    assert sorted(res.consumers) == ["conv_a", "conv_c"] and sorted(res.norms) == ["bn0", "bn_b"]
    assert by_producers["conv_c",].consumers == ["fc1"] and by_producers["conv_c",].blocks["fc1"] == 16
    assert by_producers["fc1",].norms == ["bn1"] and by_producers["fc1",].consumers == ["head"]
    assert by_producers["head",].fixed == "reaches the model's output" and by_producers["head",].keep is None
    assert [len(g.keep) for g in groups if g.keep is not None] and all(
        len(g.keep) == g.channels // 2 for g in groups if g.fixed is None)


def test_pruning_dead_channels_is_exact_and_the_original_is_untouched():
    model = _model_with_dead_channels()
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(6, 3, 8, 8)
    small = prune_channels(model, 0.5, example_input=x[:2])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.stem.out_channels == 8 and model.fc1.in_features == 192
    assert type(small) is ResNetLet and small is not model
    assert (small.stem.out_channels, small.conv_a.out_channels, small.conv_b.out_channels) == (4, 8, 4)
    assert (small.conv_a.in_channels, small.conv_c.in_channels, small.conv_c.out_channels) == (4, 4, 6)
    assert (small.bn0.num_features, small.bn_a.num_features, small.bn_b.num_features) == (4, 8, 4)
    assert (small.fc1.in_features, small.fc1.out_features, small.bn1.num_features) == (6 * 16, 10, 10)
    assert (small.head.in_features, small.head.out_features) == (10, 5)
    keep = {name: [c for c in range(getattr(model, name).weight.shape[0]) if c not in dead]
            for name, dead in DEAD.items()}  # the dead channels are the ones removed
    keep["conv_b"] = keep["stem"]
    assert torch.equal(small.conv_a.weight, model.conv_a.weight[keep["conv_a"]][:, keep["stem"]])
    assert torch.equal(small.conv_b.weight, model.conv_b.weight[keep["stem"]][:, keep["conv_a"]])
    assert torch.equal(small.bn_b.running_var, model.bn_b.running_var[keep["stem"]])
    columns = [c * 16 + s for c in keep["conv_c"] for s in range(16)]  # flatten: 16 positions per channel
    assert torch.equal(small.fc1.weight, model.fc1.weight[keep["fc1"]][:, columns])
    assert torch.equal(small.head.weight, model.head.weight[:, keep["fc1"]])
    assert torch.allclose(small(x), model(x), atol=1e-5, rtol=1e-5)
    assert count_flops(small, x[:1]) < 0.3 * count_flops(model, x[:1])


def test_batch_norm_statistics_do_not_move_in_training_mode():
    model = ResNetLet().train()
    small = prune_channels(model, 0.5, example_input=torch.randn(4, 3, 8, 8))
    assert small.training and small.bn_a.training
    assert torch.equal(model.bn_a.running_mean, torch.zeros(16)) and int(model.bn_a.num_batches_tracked) == 0
    assert torch.equal(small.bn_a.running_mean, torch.zeros(8)) and int(small.bn_a.num_batches_tracked) == 0


def test_ratio_zero_and_skip_keep_channels():
    model = ResNetLet().eval()
    x = torch.randn(2, 3, 8, 8)
    same = prune_channels(model, 0.0, example_input=x)
    assert torch.allclose(same(x), model(x)) and same.conv_a.out_channels == 16
    kept = prune_channels(model, 0.5, example_input=x, skip=["conv_b"])
    assert kept.stem.out_channels == 8 and kept.conv_b.out_channels == 8 and kept.conv_a.out_channels == 8
    assert kept.conv_b.in_channels == 8  # a skipped layer keeps its outputs; its inputs still shrink


def test_linear_chain_keeps_training_mode_and_grad_flags():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Dropout(0.1), nn.Linear(10, 8), nn.GELU(),
                          nn.Linear(8, 3))
    model[0].bias.requires_grad_(False)
    small = prune_channels(model, 0.3, example_input=torch.randn(4, 6))
    assert [(m.in_features, m.out_features) for m in small if isinstance(m, nn.Linear)] == [(6, 7), (7, 6), (6, 3)]
    assert small.training and not small[0].bias.requires_grad and small[3].weight.requires_grad
    small[0].weight.sum().backward()


class ViewOfChannels(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.conv1(x)
        return self.conv2(y.view(y.shape[0], 4, 2 * y.shape[2], y.shape[3]))  # moves channels into rows


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3), Gate())

    def forward(self, x):
        return self.block(self.conv(x))


class Gate(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x  # data-dependent control flow: fx cannot trace it


@pytest.mark.parametrize("model, match", [
    (ViewOfChannels(), r"channels of conv1 through node 'view' \(method .view\(\)\).*skip="),
    (Branchy(), r"torch.fx cannot trace module 'block.1'"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Softmax(dim=1), nn.Conv2d(4, 2, 1)),
     r"channels of 0 through node '_1' \(module '1', Softmax\)"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 2, 1)),
     r"channels of 0 through node '_1' \(module '1', Conv2d\)"),
])
def test_unresolvable_dependencies_raise_and_change_nothing(model, match):
    before = copy.deepcopy(model.state_dict())
    modules = [type(m) for m in model.modules()]
    with pytest.raises(ValueError, match=match):
        prune_channels(model, 0.5, example_input=torch.randn(2, 1, 8, 8))
    assert [type(m) for m in model.modules()] == modules
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_unknown_op_on_the_way_to_the_output_is_fine_and_bad_ratio_raises():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.Softmax(dim=1))
    groups = plan_channels(model, 0.5, example_input=torch.randn(2, 1, 8, 8))
    assert [g.fixed for g in groups if g.producers == ["2"]] == [
        "reaches the model's output through node '_3' (module '3', Softmax)"]
    small = prune_channels(model, 0.5, example_input=torch.randn(2, 1, 8, 8))
    assert small[0].out_channels == 2 and small[2].out_channels == 3
    for bad in [1.0, -0.5, float("nan"), "half"]:
        with pytest.raises(ValueError, match=r"ratio must be a number in \[0, 1\)"):
            prune_channels(model, bad, example_input=torch.randn(2, 1, 8, 8))


def test_a_layer_called_twice_prunes_consistently():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv0, self.shared, self.out = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), \
                nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.out(self.shared(F.relu(self.shared(self.conv0(x)))))

    small = prune_channels(Twice(), 0.5, example_input=torch.randn(2, 1, 8, 8))
    assert (small.conv0.out_channels, small.shared.in_channels, small.shared.out_channels) == (3, 3, 3)
    assert small(torch.randn(2, 1, 8, 8)).shape == (2, 2, 8, 8)


def test_flops_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 5))
    flops = flops_by_layer(model, torch.randn(2, 3, 8, 8))
    assert flops == {"0": 2 * (2 * 4 * 36) * (3 * 9), "2": 2 * (2 * 5) * (4 * 36)}
    assert count_flops(model, torch.randn(2, 3, 8, 8)) == sum(flops.values())


def test_round_to_keeps_multiples_of_the_vector_width():
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 20, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(20, 6, 1), nn.Flatten(), nn.Linear(6 * 64, 10))
    x = torch.randn(2, 3, 8, 8)
    plain = prune_channels(model, 0.3, example_input=x)
    assert (plain[0].out_channels, plain[2].out_channels) == (45, 14)
    small = prune_channels(model, 0.3, example_input=x, round_to=8)
    # 45 -> 48 and 14 -> 16; the last conv's 4 of 6 would round to 8, more than it has, so it keeps all 6
    assert (small[0].out_channels, small[2].out_channels, small[4].out_channels) == (48, 16, 6)
    assert small(x).shape == (2, 10)
    for bad in [0, -8, 2.5, True]:
        with pytest.raises(ValueError, match="round_to must be a positive int"):
            prune_channels(model, 0.3, example_input=x, round_to=bad)
