"""pycomp.retention.metrics against hand-computed cases."""
import copy
import math

import pytest
import torch
from torch import nn

import pycomp
from pycomp.retention import metrics as M


def logits_of(probs):
    """Logits whose softmax is probs (rows of probabilities)."""
    return torch.tensor(probs, dtype=torch.float64).log()


def linear(weight, bias=None):
    w = torch.tensor(weight, dtype=torch.float32)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))
    return layer


# ----------------------------------------------------------------------------- outputs


def test_topk_accuracy_and_clamped_k():
    lo = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    y = torch.tensor([0, 1, 2, 2])
    assert M.topk_accuracy(lo, y, 1) == pytest.approx(0.5)  # rows 0 and 3
    assert M.topk_accuracy(lo, y, 2) == pytest.approx(0.75)  # row 2's label is ranked third
    assert M.topk_accuracy(lo, y, 5) == 1.0  # k=5 > 3 classes: every label is in the top 3


def test_agreement_and_kl_by_hand():
    lo = logits_of([[0.25, 0.75], [0.5, 0.5]])
    lc = logits_of([[0.75, 0.25], [0.5, 0.5]])
    assert M.agreement(lo, lc) == pytest.approx(0.5)
    kl_row0 = 0.25 * math.log(0.25 / 0.75) + 0.75 * math.log(0.75 / 0.25)
    assert M.kl_divergence(lo, lc) == pytest.approx(kl_row0 / 2)


def test_js_divergence_by_hand():
    p, q = [0.25, 0.75], [0.75, 0.25]  # m = [0.5, 0.5]
    kl_pm = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert M.js_divergence(logits_of([p]), logits_of([q])) == pytest.approx(kl_pm)  # KL(q||m) = KL(p||m)
    assert M.js_divergence(logits_of([p]), logits_of([p])) == pytest.approx(0.0, abs=1e-12)
    # disjoint supports: the upper bound ln 2 (KL would be infinite here)
    assert M.js_divergence(torch.tensor([[0.0, -1000.0]]), torch.tensor([[-1000.0, 0.0]])) == pytest.approx(math.log(2))


def test_ece_by_hand():
    # confidences 0.55 (right), 0.7 (right), 0.75 (wrong), 0.9 (right)
    lo = logits_of([[0.55, 0.45], [0.3, 0.7], [0.75, 0.25], [0.9, 0.1]])
    y = torch.tensor([0, 1, 1, 0])
    # 5 bins: (.4,.6] holds 0.55; (.6,.8] holds 0.7 and 0.75 (acc 1/2, conf 0.725); (.8,1] holds 0.9
    want5 = 0.25 * abs(1 - 0.55) + 0.5 * abs(0.5 - 0.725) + 0.25 * abs(1 - 0.9)
    assert M.expected_calibration_error(lo, y, n_bins=5) == pytest.approx(want5)  # 0.25
    # 15 bins (width 1/15): every confidence in its own bin
    want15 = (0.45 + 0.3 + 0.75 + 0.1) / 4
    assert M.expected_calibration_error(lo, y) == pytest.approx(want15)  # 0.4


def test_ece_bins_are_closed_on_the_right():
    lo = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # confidences exactly 0.5 (right) and 0.75 (wrong)
    y = torch.tensor([0, 1])
    # 2 bins: 0.5 falls in (0, 0.5], 0.75 in (0.5, 1]; were 0.5 in the upper bin, ECE would be |1/2 - 0.625| = 0.125
    assert M.expected_calibration_error(lo, y, n_bins=2) == pytest.approx(0.5 * 0.5 + 0.5 * 0.75)


def test_per_class_drop_worst_classes_and_flips():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    po = torch.tensor([0, 0, 1, 0, 2, 2])  # right on 0, 1, 2, 4, 5
    pc = torch.tensor([0, 1, 1, 1, 0, 1])  # right on 0, 2, 3
    lo, lc = nn.functional.one_hot(po, 4).float(), nn.functional.one_hot(pc, 4).float()  # class 3 never labelled
    assert M.per_class_accuracy(lo, y) == {0: 1.0, 1: 0.5, 2: 1.0}
    assert M.per_class_drop(lo, lc, y) == {0: 0.5, 1: -0.5, 2: 1.0}
    assert M.worst_classes(lo, lc, y, n=2) == [(2, 1.0), (0, 0.5)]
    assert M.flipped_examples(lo, lc, y) == {"disagree": [1, 3, 4, 5], "right_to_wrong": [1, 4, 5],
                                             "wrong_to_right": [3]}
    assert M.flipped_examples(lo, lc) == {"disagree": [1, 3, 4, 5]}


def test_output_metrics_keys():
    lo, lc, y = torch.randn(20, 7), torch.randn(20, 7), torch.randint(0, 7, (20,))
    r = M.output_metrics(lo, lc, y)
    assert r["top1_original"] == M.topk_accuracy(lo, y, 1) and r["top5_compressed"] == M.topk_accuracy(lc, y, 5)
    assert {"ece_original", "ece_compressed", "js_divergence", "per_class_drop", "worst_classes"} <= set(r)
    unlabelled = M.output_metrics(lo, lc)
    assert set(unlabelled) == {"agreement", "kl_divergence", "js_divergence", "flipped"}


# ----------------------------------------------------------------------------- robustness


def line_data():
    """1-D points on the diagonal of 2-D inputs, labelled 0 when positive: x = [t, t]."""
    t = torch.tensor([0.1, 0.25, 0.5, -0.2])
    return [(torch.stack([t, t], 1), torch.tensor([0, 0, 0, 1]))]


def test_fgsm_on_linear_models_by_hand():
    # logits [x1, -x1]: class 0 iff x1 > 0. For label 0, d CE/dx1 = -2 p1 < 0, so FGSM moves x1 by -eps
    # (by +eps for label 1); x2 has zero gradient and stays. The compressed model reads x2 instead, so
    # it only loses accuracy if it is attacked through its own gradient.
    original, compressed = linear([[1.0, 0.0], [-1.0, 0.0]]), linear([[0.0, 1.0], [0.0, -1.0]])
    rows = M.fgsm_robustness(original, compressed, line_data(), epsilons=(0.0, 0.15, 0.3))
    # eps 0.15: t -> [-0.05, 0.1, 0.35 | -0.05] -> 3 of 4 right; eps 0.3: [-0.2, -0.05, 0.2 | 0.1] -> 1 of 4
    assert [r["accuracy_original"] for r in rows] == pytest.approx([1.0, 0.75, 0.25])
    assert [r["accuracy_compressed"] for r in rows] == pytest.approx([1.0, 0.75, 0.25])
    assert [r["epsilon"] for r in rows] == [0.0, 0.15, 0.3]
    assert original.weight.grad is None  # parameters' gradients untouched


def test_fgsm_epsilon_zero_is_clean_accuracy_and_clamp_applies():
    torch.manual_seed(0)
    model, other = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)), nn.Linear(5, 3)
    data = [(torch.rand(10, 5), torch.randint(0, 3, (10,))) for _ in range(3)]
    clean = lambda m: sum(int((m(x).argmax(-1) == y).sum()) for x, y in data) / 30  # noqa: E731
    row = M.fgsm_robustness(model, other, data, epsilons=(0.0,), clamp=(0.0, 1.0))[0]
    assert row["accuracy_original"] == clean(model) and row["accuracy_compressed"] == clean(other)
    # the line data, clamped to [0.3, 0.4] after a large step: every input is positive -> class 0
    original = linear([[1.0, 0.0], [-1.0, 0.0]])
    assert M.fgsm_robustness(original, original, line_data(), (5.0,), clamp=(0.3, 0.4))[0]["accuracy_original"] == 0.75


class Spy(nn.Module):
    """A linear layer that remembers every input it saw."""

    def __init__(self, layer):
        super().__init__()
        self.layer, self.seen = layer, []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.layer(x)


def test_noise_is_shared_reproducible_and_sigma_zero_is_clean():
    torch.manual_seed(0)
    data = [(torch.randn(6, 4), torch.randint(0, 3, (6,))) for _ in range(2)]
    a, b = Spy(nn.Linear(4, 3)), Spy(nn.Linear(4, 3))
    rows = M.noise_robustness(a, b, data, sigmas=(0.0, 0.5), seed=3)
    clean = lambda m: sum(int((m(x).argmax(-1) == y).sum()) for x, y in data) / 12  # noqa: E731
    assert rows[0]["accuracy_original"] == clean(a.layer) and rows[0]["accuracy_compressed"] == clean(b.layer)
    assert torch.equal(a.seen[0], data[0][0])  # sigma 0: the inputs themselves
    assert all(torch.equal(u, v) for u, v in zip(a.seen, b.seen))  # both models saw the same noisy inputs
    assert not torch.equal(a.seen[2], data[0][0])
    assert M.noise_robustness(a, b, data, sigmas=(0.0, 0.5), seed=3) == rows
    # clamped to [0.3, 0.4]: every input is positive, the line model says class 0, right on 3 of 4
    original = linear([[1.0, 0.0], [-1.0, 0.0]])
    row = M.noise_robustness(original, original, line_data(), (100.0,), clamp=(0.3, 0.4))[0]
    assert row["accuracy_original"] == 0.75


def test_robustness_needs_labels():
    with pytest.raises(ValueError, match="labels"):
        M.noise_robustness(nn.Linear(2, 2), nn.Linear(2, 2), [torch.randn(3, 2)])


# ----------------------------------------------------------------------------- CKA


def cka_by_definition(x, y):
    """Kornblith et al.'s HSIC form: tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)), K = XX^T, L = YY^T."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float((k * l).sum() / (k.norm() * l.norm()))


def test_cka_invariances():
    torch.manual_seed(0)
    x = torch.randn(30, 6)
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    assert M.linear_cka(x, x) == pytest.approx(1.0)
    assert M.linear_cka(x, x @ q) == pytest.approx(1.0)  # orthogonal map
    assert M.linear_cka(x, 3.5 * x) == pytest.approx(1.0)  # isotropic scaling
    assert M.linear_cka(x, x + 2.0) == pytest.approx(1.0)  # translation (centring)


def test_cka_by_hand():
    # one feature each: CKA is the squared cosine of the centred columns [-1, 0, 1] and [-1, 1, 0] -> (1 / 2)^2
    assert M.linear_cka(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[1.0], [3.0], [2.0]])) == pytest.approx(0.25)
    # X^T X = 2 I (Frobenius 2 sqrt 2), Y^T Y = 2, Y^T X = [2, 0] -> 4 / (2 sqrt 2 * 2) = 1 / sqrt 2
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert M.linear_cka(x, x[:, :1]) == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(M.linear_cka(x, torch.ones(4, 3)))


@pytest.mark.parametrize("n, d1, d2", [(40, 5, 3), (6, 12, 4)])  # the (D, D) path, then the (N, N) Gram path
def test_cka_matches_the_hsic_definition(n, d1, d2):
    torch.manual_seed(n)
    x, y = torch.randn(n, d1), torch.randn(n, d2)
    assert M.linear_cka(x, y) == pytest.approx(cka_by_definition(x, y), rel=1e-9)


class WithIdleHead(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body, self.head = body, nn.Linear(2, 2)

    def forward(self, x):
        return self.body(x)


def test_layer_cka_names_and_identity():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    data = [(torch.randn(5, 4), torch.zeros(5)) for _ in range(3)]
    r = M.layer_cka(model, copy.deepcopy(model), data)
    assert list(r) == ["0", "1", "2"] and r == pytest.approx({"0": 1.0, "1": 1.0, "2": 1.0})
    assert list(M.layer_cka(model, copy.deepcopy(model), data, layers=["2"])) == ["2"]
    with pytest.raises(ValueError, match="no module named"):
        M.layer_cka(model, model, data, layers=["head"])
    idle = WithIdleHead(model)  # a leaf that never runs: left out by default, an error when named
    assert list(M.layer_cka(idle, idle, data)) == ["body.0", "body.1", "body.2"]
    with pytest.raises(ValueError, match="did not run"):
        M.layer_cka(idle, idle, data, layers=["body.0", "head"])


def test_activations_cap_examples_and_concatenate_shared_modules():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 4), relu, nn.Linear(4, 4), relu)  # one ReLU called twice
    inputs = [x for x, _ in M._take([torch.randn(4, 3)] * 3, max_examples=10)]
    assert [len(x) for x in inputs] == [4, 4, 2]
    acts = M._activations(model, ["1", "2"], inputs)
    assert {k: tuple(v.shape) for k, v in acts.items()} == {"1": (10, 8), "2": (10, 4)}  # two ReLU outputs side by side
    assert M.matched_layers(model, model) == ["0", "1", "2"]  # the shared ReLU is one module, named once


def test_layer_cka_after_int8_compression_matches_names():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    small = pycomp.compress(model, "int8")
    assert M.matched_layers(model, small) == ["0", "1", "2", "3"]
    x = torch.rand(24, 1, 8, 8)
    data = [(x[i:i + 8], model(x[i:i + 8]).argmax(-1).detach()) for i in range(0, 24, 8)]
    r = M.layer_cka(model, small, data, max_examples=16)
    assert all(0.95 < v <= 1.0 + 1e-9 for v in r.values()), r
    assert M.attribution_agreement(model, small, data) > 0.9  # straight-through gradients reach the input
    rows = M.fgsm_robustness(model, small, data, epsilons=(0.0,), clamp=(0.0, 1.0))
    assert rows[0]["accuracy_original"] == 1.0  # the labels are the original's predictions


# ----------------------------------------------------------------------------- attribution


def test_spearman_monotone_reversed_and_ties():
    torch.manual_seed(0)
    a = torch.randn(3, 2, 5)  # features: everything after dim 0
    assert M.spearman(a, a.exp()).tolist() == pytest.approx([1.0] * 3)
    assert M.spearman(a, -a**3).tolist() == pytest.approx([-1.0] * 3)
    # ties: [1, 2, 2, 3] ranks as [0, 1.5, 1.5, 3]; against [0, 1, 2, 3]: 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    rho = M.spearman(torch.tensor([[1.0, 2.0, 2.0, 3.0]]), torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert float(rho) == pytest.approx(math.sqrt(0.9))
    assert M.spearman(torch.ones(1, 4), torch.arange(4.0)[None]).isnan().all()


def test_spearman_matches_scipy_on_ties():
    stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(1)
    a, b = torch.randint(0, 4, (5, 12)).float(), torch.randint(0, 3, (5, 12)).float()
    want = [stats.spearmanr(u, v).statistic for u, v in zip(a.numpy(), b.numpy())]
    assert M.spearman(a, b).tolist() == pytest.approx(want, rel=1e-9)


def test_saliency_and_attribution_agreement_on_linear_models():
    original = linear([[1.0, -2.0, 3.0, 0.5], [0.0, 1.0, -1.0, 2.0]])
    x = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    target = torch.tensor([1])
    assert M.saliency(original, x, target).tolist() == [[0.0, 2.0, -0.5, -2.0]]  # W[target] * x
    data = [torch.randn(6, 4) for _ in range(2)]
    scaled = linear((2 * original.weight).tolist(), [5.0, -5.0])  # same ranks for every class
    negated = linear((-original.weight).tolist())  # every map reversed
    assert M.attribution_agreement(original, scaled, data) == pytest.approx(1.0)
    assert M.attribution_agreement(original, negated, data) == pytest.approx(-1.0)
    assert original.weight.grad is None


# ----------------------------------------------------------------------------- embeddings


def on_circle(degrees):
    r = torch.tensor(degrees, dtype=torch.float64).deg2rad()
    return torch.stack([r.cos(), r.sin()], 1)


def test_embedding_cosine_by_hand():
    eo, ec = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 2.0], [0.0, -3.0]])
    assert M.embedding_cosine(eo, ec) == pytest.approx((1 / math.sqrt(2) - 1) / 2)
    assert M.embedding_cosine(eo, eo) == pytest.approx(1.0)


def test_knn_agreement_by_hand():
    eo, ec = on_circle([0, 10, 90, 100]), on_circle([0, 10, 90, 200])
    # k=1: original 0->1, 1->0, 2->3, 3->2; compressed 0->1, 1->0, 2->1 (80 deg), 3->2 (110 deg)
    assert M.knn_agreement(eo, ec, k=1) == pytest.approx(0.75)
    # k=2: original {1,2}, {0,2}, {1,3}, {1,2}; compressed {1,2}, {0,2}, {0,1}, {0,2} -> (1 + 1 + 1/2 + 1/2) / 4
    assert M.knn_agreement(eo, ec, k=2) == pytest.approx(0.75)
    assert M.knn_agreement(eo, eo, k=2) == 1.0
    assert M.embedding_fidelity(eo, ec, k=50)["k"] == 3


def test_knn_agreement_excludes_self_and_chunks():
    torch.manual_seed(0)
    eo, ec = torch.randn(11, 4), torch.randn(11, 6)
    assert M.knn_agreement(eo, ec, k=10) == 1.0  # k = N - 1: all the others, never the point itself
    assert M.knn_agreement(eo, ec, k=3, chunk=4) == M.knn_agreement(eo, ec, k=3)
