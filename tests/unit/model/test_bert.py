"""The BERT-style masked-LM encoder (``llmbook.model.bert``) and its export.

References and tolerances (float32 on the CPU; seeded random inputs drawn fresh for
each test, batch > 1, odd lengths):

* ``MaskedLM`` vs Hugging Face's ``BertForMaskedLM`` holding the same weights
  (``to_hf_bert``; every parameter perturbed away from its initial value), with and
  without a padding mask: logits within atol 1e-5;
* parameter count: ``count_mlm_parameters`` == ours == Hugging Face's minus its
  one-row token-type embedding (which ``MaskedLM`` does not have);
* ``mlm_loss`` vs a hand computation (log-softmax at each masked position, averaged
  in a Python loop): atol 1e-6;
* ``pipeline("fill-mask")`` on an exported model whose tokenizer is the course
  tokenizer plus ``<|mask|>``: the same top-5 token ids, in order, as our logits,
  and softmax scores within atol 1e-5.

Nothing is downloaded: Hugging Face runs with ``HF_HUB_OFFLINE=1``.
"""

import math

import pytest
import torch

from llmbook.data import course_tokenizer
from llmbook.data.tokenization import MASK_TOKEN
from llmbook.model.bert import EncoderConfig, MaskedLM, count_mlm_parameters
from llmbook.model.hf import save_hf, to_hf_bert
from llmbook.train.objectives import IGNORE_INDEX, mask_tokens, mlm_loss

ATOL = 1e-5
SIZES = {"vocab_size": 101, "context_length": 23, "d_model": 32, "n_heads": 4,
         "n_layers": 2, "d_ff": 56}  # fmt: skip


pytestmark = pytest.mark.usefixtures("hf_offline")


@pytest.fixture(params=[0, 1], ids=lambda s: f"seed{s}")
def gen(request):
    torch.manual_seed(3000 + request.param)  # module weights
    return torch.Generator().manual_seed(300 + request.param)  # inputs


@torch.no_grad()
def perturbed(gen: torch.Generator, **sizes) -> MaskedLM:
    """A freshly initialised MaskedLM whose every parameter is moved by N(0, 0.1^2)."""
    model = MaskedLM(EncoderConfig(**{**SIZES, **sizes})).eval()
    for p in model.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def attention_mask(lengths: list[int], seq: int) -> torch.Tensor:
    return (torch.arange(seq) < torch.tensor(lengths)[:, None]).long()  # (batch, seq)


# --- the model -----------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "padding"])
def test_logits_match_hf_bert(gen, masked):
    model = perturbed(gen, layer_norm_eps=1e-7)
    hf_model = to_hf_bert(model)
    for seq in (1, 9, 23):
        ids = torch.randint(101, (3, seq), generator=gen)
        mask = attention_mask([seq, max(1, seq - 4), 1], seq) if masked else None
        with torch.no_grad():
            theirs = hf_model(ids, attention_mask=mask).logits
            ours = model(ids, mask)
        assert ours.shape == (3, seq, 101)
        torch.testing.assert_close(theirs, ours, rtol=0, atol=ATOL)


def test_padding_does_not_change_the_real_positions(gen):
    model = perturbed(gen)
    ids = torch.randint(101, (2, 13), generator=gen)
    mask = attention_mask([13, 6], 13)
    with torch.no_grad():
        padded = model(ids, mask)
        alone = model(ids[1:, :6])
    torch.testing.assert_close(padded[1, :6], alone[0], rtol=0, atol=ATOL)


def test_fused_attention_matches(gen):
    model = perturbed(gen)
    fused = MaskedLM(EncoderConfig(**SIZES, fused_attention=True)).eval()
    fused.load_state_dict(model.state_dict())
    ids = torch.randint(101, (3, 11), generator=gen)
    mask = attention_mask([11, 5, 8], 11)
    with torch.no_grad():
        torch.testing.assert_close(
            fused(ids, mask), model(ids, mask), rtol=0, atol=ATOL
        )


def test_parameter_count_matches_hf(gen):
    model = perturbed(gen)
    hf_model = to_hf_bert(model)
    ours = sum(p.numel() for p in model.parameters())  # the tied weight counted once
    token_type = hf_model.bert.embeddings.token_type_embeddings.weight.numel()
    assert token_type == SIZES["d_model"]
    assert ours == count_mlm_parameters(model.config)
    assert ours == hf_model.num_parameters() - token_type
    assert model.lm_head.weight is model.tok_emb.weight
    assert hf_model.bert.embeddings.token_type_embeddings.weight.abs().max() == 0


def test_config_and_inputs_are_validated():
    assert EncoderConfig(d_model=64).d_ff == 256
    assert EncoderConfig().layer_norm_eps == 1e-12
    with pytest.raises(ValueError, match=r"d_model \(30\) must be divisible"):
        EncoderConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="dropout must be in"):
        EncoderConfig(dropout=1.0)
    with pytest.raises(ValueError, match="context_length must be a positive"):
        EncoderConfig(context_length=0)
    model = MaskedLM(EncoderConfig(**SIZES))
    ids = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"attention_mask must have the shape"):
        model(ids, torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="longer than context_length=23"):
        model(torch.zeros(1, 24, dtype=torch.long))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.full((1, 3), 101))


# --- the loss ------------------------------------------------------------------------


def test_mlm_loss_counts_only_masked_positions(gen):
    model = perturbed(gen)
    ids = torch.randint(3, 101, (4, 21), generator=gen)
    ids[:, 0] = 1  # a special id, never chosen
    ids[2, 15:] = 0  # padding, never chosen
    mask = (ids != 0).long()
    kwargs = {"mask_id": 2, "vocab_size": 101, "special_ids": (0, 1),
              "mask_prob": 0.3}  # fmt: skip
    seed = int(torch.randint(10**6, (1,), generator=gen))
    loss = mlm_loss(model, ids, **kwargs, attention_mask=mask,
                    generator=torch.Generator().manual_seed(seed))  # fmt: skip
    # by hand: the same corruption, then -log p(original id) at each chosen position
    inputs, labels = mask_tokens(
        ids, **kwargs, generator=torch.Generator().manual_seed(seed)
    )
    chosen = (labels != IGNORE_INDEX).nonzero().tolist()
    assert 0 < len(chosen) < ids.numel()
    assert all(j != 0 and not (b == 2 and j >= 15) for b, j in chosen)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(inputs, mask), dim=-1)
    want = -sum(log_probs[b, j, ids[b, j]].item() for b, j in chosen) / len(chosen)
    assert loss.requires_grad
    assert math.isclose(loss.item(), want, abs_tol=1e-6)


def test_mlm_loss_is_nan_without_masked_positions(gen):
    model = perturbed(gen)
    ids = torch.randint(101, (2, 7), generator=gen)
    loss = mlm_loss(
        model, ids, mask_id=2, vocab_size=101, special_ids=(), mask_prob=0.0
    )
    assert math.isnan(loss.item())
    with pytest.raises(ValueError, match="vocab_size=200 exceeds"):
        mlm_loss(model, ids, mask_id=2, vocab_size=200, special_ids=())


# --- export: the fill-mask pipeline --------------------------------------------------


@pytest.fixture(scope="module")
def mask_tokenizer():
    """The course tokenizer with ``<|mask|>`` added as id 2048."""
    tokenizer = course_tokenizer(2048)
    tokenizer.add_special_tokens([MASK_TOKEN])
    assert tokenizer.token_to_id(MASK_TOKEN) == 2048
    return tokenizer


def test_save_hf_needs_the_mask_token(tmp_path):
    model = MaskedLM(EncoderConfig(**{**SIZES, "vocab_size": 2048}))
    with pytest.raises(ValueError, match=r"'<\|mask\|>' is not in the tokenizer"):
        save_hf(model, course_tokenizer(2048), tmp_path)


def test_fill_mask_pipeline_matches_ours(gen, mask_tokenizer, tmp_path):
    from transformers import AutoTokenizer, pipeline

    model = perturbed(gen, vocab_size=2049, context_length=32)
    out = save_hf(model, mask_tokenizer, tmp_path / "course-mlm-hf")
    hf_tokenizer = AutoTokenizer.from_pretrained(out)
    assert hf_tokenizer.mask_token == MASK_TOKEN and hf_tokenizer.mask_token_id == 2048
    fill = pipeline("fill-mask", model=str(out), device="cpu")
    for text in ("Return the<|mask|> of items in the list.",
                 "def f(x):\n    return<|mask|> + 1"):  # fmt: skip
        ids = torch.tensor([mask_tokenizer.encode(text).ids])  # (1, seq)
        assert hf_tokenizer(text)["input_ids"] == ids[0].tolist()
        (position,) = (ids[0] == 2048).nonzero()[0].tolist()
        with torch.no_grad():
            probs = torch.softmax(model(ids)[0, position], dim=-1)  # (vocab,)
        top = probs.topk(5)
        got = fill(text, top_k=5)
        assert [c["token"] for c in got] == top.indices.tolist(), text
        torch.testing.assert_close(
            torch.tensor([c["score"] for c in got]), top.values, rtol=0, atol=ATOL
        )
