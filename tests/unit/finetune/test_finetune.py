"""Fine-tuning (``llmbook.finetune``, Chapter 7) against ``peft``.

Each method is built from scratch and compared with ``peft.get_peft_model`` on the
same model and the same trainable values. Models are small random GPTs with every
weight perturbed (so logits are far from uniform), drawn fresh per seed; inputs are
seeded random ids, batch 3, odd lengths, with left padding where a mask applies.

* LoRA (``LoraConfig`` on our ``GPT``, peft's A and B copied into ours, B != 0):
  logits within 1e-5; equal trainable counts; merged == unmerged within 1e-5 and
  equal to peft's merged weights within 1e-6; unmerge restores W within 1e-6;
  gradients reach A and B only;
* prompt tuning (``PromptTuningConfig`` on the exported ``GPT2LMHeadModel``, peft's
  prompt copied into ours): logits of every position, virtual ones included, within
  1e-5 (real positions under a padding mask); equal trainable counts;
* prefix tuning (``PrefixTuningConfig``, with and without ``prefix_projection``,
  peft's parameters copied into ours): real tokens' logits within 1e-5 (with and
  without padding); equal trainable counts; the prefix as a pre-filled KV cache
  gives the same logits (1e-5);
* heads: shapes, padding ignored by mean pooling (1e-6), gradient flow, a linear
  probe trains only the head.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import random_gpt
from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

from llmbook.decoding import forward_with_cache
from llmbook.finetune import (
    LoRALinear,
    PrefixTuning,
    PromptTuning,
    SequenceClassifier,
    SequenceRegressor,
    apply_lora,
    count_trainable,
    lora_layers,
    lora_state_dict,
    merge_and_unwrap,
    merge_lora,
    pool,
    unmerge_lora,
)
from llmbook.model import EncoderConfig, MaskedLM
from llmbook.model.hf import to_hf_gpt2

ATOL = 1e-5  # logits (values of order 1-10) after float32 rounding in both stacks
WEIGHT_ATOL = 1e-6  # merged / restored weights
BATCH, VOCAB = 3, 53

# transformers' own deprecation notice when peft wraps a model: not ours to fix
pytestmark = [
    pytest.mark.usefixtures("hf_offline"),
    pytest.mark.filterwarnings(
        "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
    ),
]


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def seed(request):
    return 1400 + request.param


# the random GPTs here: seeded, then every weight moved by N(0, 0.3^2)
SIZES = {"vocab_size": VOCAB, "context_length": 32, "d_model": 24, "n_heads": 3,
         "n_layers": 2}  # fmt: skip


def random_ids(seed: int, seq: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (BATCH, seq), generator=gen)


def left_padding(seq: int, lengths: list[int]) -> torch.Tensor:
    """(batch, seq) attention mask, 1 = token, with the padding on the left."""
    return torch.stack([torch.arange(seq) >= seq - n for n in lengths]).long()


def n_trainable_peft(peft_model) -> int:
    return peft_model.get_nb_trainable_parameters()[0]


# --- LoRA -----------------------------------------------------------------------


def lora_pair(seed: int, r: int = 4, alpha: float = 8.0, targets=("q_proj", "v_proj")):
    """(ours, peft's) on copies of one GPT, sharing random non-zero A and B."""
    base = random_gpt(seed, config=SIZES, scale=0.3)
    theirs = get_peft_model(
        copy.deepcopy(base),
        LoraConfig(
            r=r,
            lora_alpha=alpha,
            target_modules=list(targets),
            lora_dropout=0.0,
            init_lora_weights=True,
        ),
    ).eval()
    ours = apply_lora(copy.deepcopy(base), targets, r=r, alpha=alpha).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, layer in ours.named_modules():
            if isinstance(layer, LoRALinear):
                peft_layer = theirs.base_model.model.get_submodule(name)
                a = peft_layer.lora_A["default"].weight
                b = peft_layer.lora_B["default"].weight
                b.copy_(0.3 * torch.randn(b.shape, generator=gen))  # B != 0
                layer.lora_A.copy_(a)
                layer.lora_B.copy_(b)
    return base, ours, theirs


def test_lora_starts_as_the_base_model(seed):
    base = random_gpt(seed, config=SIZES, scale=0.3)
    ours = apply_lora(copy.deepcopy(base), r=4, alpha=8)
    ids = random_ids(seed, 11)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), base(ids), rtol=0, atol=0)
    for layer in lora_layers(ours):
        assert torch.all(layer.lora_B == 0)
        bound = 1 / layer.in_features**0.5  # kaiming_uniform(a=sqrt(5)) = nn.Linear's
        assert layer.lora_A.abs().max() <= bound and layer.lora_A.std() > bound / 3


@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), ("k_proj", "fc1", "fc2")])
def test_lora_matches_peft(seed, targets):
    _, ours, theirs = lora_pair(seed, targets=targets)
    for seq in (7, 13):
        ids = random_ids(seed + seq, seq)
        with torch.no_grad():
            torch.testing.assert_close(ours(ids), theirs(ids), rtol=0, atol=ATOL)
    assert count_trainable(ours) == n_trainable_peft(theirs)
    assert len(lora_layers(ours)) == 2 * len(targets)


def test_lora_merge_and_unmerge(seed):
    _, ours, theirs = lora_pair(seed)
    ids = random_ids(seed, 9)
    original = {n: p.clone() for n, p in ours.state_dict().items()}
    with torch.no_grad():
        unmerged = ours(ids)
        merge_lora(ours)
        torch.testing.assert_close(ours(ids), unmerged, rtol=0, atol=ATOL)
    theirs.merge_adapter()
    for name, layer in ours.named_modules():
        if isinstance(layer, LoRALinear):
            peft_w = theirs.base_model.model.get_submodule(name).base_layer.weight
            torch.testing.assert_close(
                layer.base.weight, peft_w, rtol=0, atol=WEIGHT_ATOL
            )
    with pytest.raises(RuntimeError, match="already merged"):
        lora_layers(ours)[0].merge()
    unmerge_lora(ours)
    for name, p in ours.state_dict().items():
        torch.testing.assert_close(p, original[name], rtol=0, atol=WEIGHT_ATOL)


def test_merge_and_unwrap_equals_peft_merge_and_unload(seed):
    base, ours, theirs = lora_pair(seed, targets=("q_proj", "fc2"))
    ids = random_ids(seed, 11)
    with torch.no_grad():
        before = ours(ids)
        merge_and_unwrap(ours)
        torch.testing.assert_close(ours(ids), before, rtol=0, atol=ATOL)
    assert not lora_layers(ours)
    assert ours.state_dict().keys() == base.state_dict().keys()
    merged = theirs.merge_and_unload()  # peft's: plain nn.Linear layers again
    for name, layer in ours.named_modules():
        if name.endswith(("q_proj", "fc2")):
            assert type(layer) is torch.nn.Linear
            torch.testing.assert_close(
                layer.weight,
                merged.get_submodule(name).weight,
                rtol=0,
                atol=WEIGHT_ATOL,
            )
            assert not torch.equal(layer.weight, base.get_submodule(name).weight)


def test_lora_gradients_reach_only_a_and_b(seed):
    _, ours, _ = lora_pair(seed)
    ours.train()
    ids = random_ids(seed, 7)
    logits = ours(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    for name, p in ours.named_parameters():
        is_lora = name.endswith((".lora_A", ".lora_B"))
        assert p.requires_grad == is_lora, name
        assert (p.grad is not None and p.grad.abs().sum() > 0) == is_lora, name
    sd = lora_state_dict(ours)
    assert sum(t.numel() for t in sd.values()) == count_trainable(ours)
    fresh = apply_lora(random_gpt(seed, config=SIZES, scale=0.3), r=4, alpha=8)
    fresh.load_state_dict(sd, strict=False)
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids), ours.eval()(ids), rtol=0, atol=ATOL)


def test_lora_dropout_and_errors():
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(10, 6), r=2, alpha=4, dropout=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 5, 10)
    assert not torch.allclose(layer.train()(x), layer(x))  # dropout is random
    with torch.no_grad():
        eval_out = layer.eval()(x)
        layer.merge()
        torch.testing.assert_close(layer(x), eval_out, rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="no nn.Linear .* matches"):
        apply_lora(random_gpt(0, config=SIZES, scale=0.3), ("query",))
    with pytest.raises(ValueError, match="rank r"):
        LoRALinear(torch.nn.Linear(4, 4), r=0, alpha=1)
    with pytest.raises(ValueError, match=r"expected input \(\.\.\., 10\)"):
        layer(torch.randn(2, 3))


# --- prompt tuning ----------------------------------------------------------------


def prompt_pair(seed: int, n_virtual: int = 5):
    base = random_gpt(seed, config=SIZES, scale=0.3)
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n_virtual)
    theirs = get_peft_model(to_hf_gpt2(base), config).eval()
    ours = PromptTuning(copy.deepcopy(base), n_virtual).eval()
    with torch.no_grad():
        ours.prompt.copy_(theirs.prompt_encoder["default"].embedding.weight)
    return ours, theirs


def test_prompt_tuning_matches_peft(seed):
    ours, theirs = prompt_pair(seed)
    n_v = ours.n_virtual_tokens
    ids = random_ids(seed, 9)
    with torch.no_grad():
        mine = ours(ids)
        assert mine.shape == (BATCH, n_v + 9, VOCAB)  # virtual positions included
        torch.testing.assert_close(mine, theirs(ids).logits, rtol=0, atol=ATOL)
        mask = left_padding(9, [9, 4, 6])
        mine = ours(ids, attention_mask=mask)
        ref = theirs(input_ids=ids, attention_mask=mask).logits
        real = torch.cat([torch.ones(BATCH, n_v), mask], dim=1).bool()
        torch.testing.assert_close(mine[real], ref[real], rtol=0, atol=ATOL)
        torch.testing.assert_close(
            ours.real_logits(ids, mask), mine[:, n_v:], rtol=0, atol=0
        )
    assert count_trainable(ours) == n_trainable_peft(theirs) == n_v * 24


def test_prompt_tuning_trains_only_the_prompt(seed):
    base = random_gpt(seed, config=SIZES, scale=0.3)
    ours = PromptTuning(base, 4, init_ids=[3, 1, 4])
    torch.testing.assert_close(ours.prompt, base.tok_emb.weight[[3, 1, 4, 3]])
    ids = random_ids(seed, 7)
    ours(ids).logsumexp(-1).mean().backward()
    assert [n for n, p in ours.named_parameters() if p.grad is not None] == ["prompt"]
    with pytest.raises(
        ValueError, match="29 tokens after 4 virtual tokens exceed context_length=32"
    ):
        ours(random_ids(seed, 29))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        PromptTuning(base, 4, init_ids=[VOCAB])


# --- prefix tuning ----------------------------------------------------------------


def prefix_pair(seed: int, projection_dim: int | None, n_prefix: int = 4):
    base = random_gpt(seed, config=SIZES, scale=0.3)
    config = PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=n_prefix,
        prefix_projection=projection_dim is not None,
        encoder_hidden_size=projection_dim or 24,
    )
    theirs = get_peft_model(to_hf_gpt2(base), config).eval()
    ours = PrefixTuning(copy.deepcopy(base), n_prefix, projection_dim).eval()
    encoder = theirs.prompt_encoder["default"]
    with torch.no_grad():
        if projection_dim is None:
            ours.load_flat(encoder.embedding.weight)
        else:
            for p in encoder.transform.parameters():  # move the MLP off its
                p.add_(0.3 * torch.randn_like(p))  # default init: larger prefixes
            ours.embedding.copy_(encoder.embedding.weight)
            ours.transform.load_state_dict(encoder.transform.state_dict())
    return ours, theirs


@pytest.mark.parametrize("projection_dim", [None, 16], ids=["direct", "mlp"])
def test_prefix_tuning_matches_peft(seed, projection_dim):
    ours, theirs = prefix_pair(seed, projection_dim)
    ids = random_ids(seed, 11)
    mask = left_padding(11, [11, 5, 8])
    with torch.no_grad():
        mine = ours(ids)
        assert mine.shape == (BATCH, 11, VOCAB)  # real tokens only
        torch.testing.assert_close(mine, theirs(ids).logits, rtol=0, atol=ATOL)
        mine = ours(ids, attention_mask=mask)
        ref = theirs(input_ids=ids, attention_mask=mask).logits
        real = mask.bool()
        torch.testing.assert_close(mine[real], ref[real], rtol=0, atol=ATOL)
    assert count_trainable(ours) == n_trainable_peft(theirs)


def test_prefix_is_a_prefilled_kv_cache(seed):
    ours, _ = prefix_pair(seed, None)
    ids = random_ids(seed, 9)
    with torch.no_grad():
        full = ours(ids)
        cache = ours.kv_cache(BATCH)
        first = forward_with_cache(ours.model, ids[:, :5], cache)
        rest = forward_with_cache(ours.model, ids[:, 5:], cache)
    torch.testing.assert_close(torch.cat([first, rest], 1), full, rtol=0, atol=ATOL)


def test_prefix_tuning_trains_only_the_prefix(seed):
    ours = PrefixTuning(random_gpt(seed, config=SIZES, scale=0.3), 3)
    assert ours.prefix.shape == (
        2,
        2,
        3,
        3,
        8,
    )  # (layers, k/v, heads, n_prefix, d_head)
    ids = random_ids(seed, 7)
    ours(ids).logsumexp(-1).mean().backward()
    assert [n for n, p in ours.named_parameters() if p.grad is not None] == ["prefix"]
    assert ours.prefix.grad.abs().sum() > 0
    with pytest.raises(
        ValueError, match="30 tokens after 3 prefix positions exceed context_length=32"
    ):
        ours(random_ids(seed, 30))
    with pytest.raises(ValueError, match="flat prefix"):
        ours.load_flat(torch.zeros(3, 2 * 2 * 24 + 6))


# --- heads ------------------------------------------------------------------------


def random_encoder(seed: int) -> MaskedLM:
    torch.manual_seed(seed)
    return MaskedLM(
        EncoderConfig(vocab_size=VOCAB, context_length=32, d_model=24, n_heads=3)
    ).eval()


def test_mean_pooling_ignores_padding(seed):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(BATCH, 7, 5, generator=gen)
    mask = left_padding(7, [7, 2, 5])
    pooled = pool(hidden, mask)
    for i, n in enumerate([7, 2, 5]):
        torch.testing.assert_close(pooled[i], hidden[i, -n:].mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(pool(hidden, how="first"), hidden[:, 0])
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool(hidden, mask, "max")


@pytest.mark.parametrize("pooling", ["mean", "first"])
def test_classifier_and_regressor(seed, pooling):
    encoder = random_encoder(seed)
    clf = SequenceClassifier(encoder, 4, pooling).eval()
    ids = random_ids(seed, 9)
    mask = torch.ones_like(ids)
    mask[1:, 6:] = 0  # right padding, so "first" still reads a real token
    logits = clf(ids, mask)
    assert logits.shape == (BATCH, 4) and clf.predict(ids, mask).shape == (BATCH,)
    other = ids.masked_fill(mask == 0, 7)  # change only the padded ids
    torch.testing.assert_close(clf(other, mask), logits, rtol=0, atol=1e-6)
    clf.loss(ids, torch.tensor([0, 3, 1]), mask).backward()
    unused = ("encoder.head_", "encoder.lm_head")  # the MLM head is not in encode()
    for name, p in clf.named_parameters():  # the encoder trains too
        assert (p.grad is not None) != name.startswith(unused), name
    reg = SequenceRegressor(random_encoder(seed), pooling=pooling).eval()
    pred = reg(ids, mask)
    assert pred.shape == (BATCH,)
    torch.testing.assert_close(reg(other, mask), pred, rtol=0, atol=1e-6)
    targets = torch.randn(BATCH, generator=torch.Generator().manual_seed(seed))
    loss = reg.loss(ids, targets, mask)
    assert loss.item() == pytest.approx(((pred - targets) ** 2).mean().item(), rel=1e-6)
    # head and encoder learn: fifty full-batch Adam steps all but fit three targets
    opt = torch.optim.Adam(reg.parameters(), lr=1e-2)
    for _ in range(50):
        opt.zero_grad()
        reg.loss(ids, targets, mask).backward()
        opt.step()
    assert reg.loss(ids, targets, mask).item() < 0.1 * loss.item()


def test_linear_probe_trains_only_the_head(seed):
    encoder = random_encoder(seed)
    probe = SequenceRegressor(encoder, n_outputs=2, freeze_encoder=True)
    trainable = {n for n, p in probe.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    assert count_trainable(probe) == 24 * 2 + 2
    ids = random_ids(seed, 5)
    probe.loss(ids, torch.randn(BATCH, 2)).backward()
    assert all(p.grad is None for p in encoder.parameters())
    with pytest.raises(ValueError, match="n_classes must be an integer >= 2"):
        SequenceClassifier(encoder, 1)
    with pytest.raises(ValueError, match="targets must have the output's shape"):
        probe.loss(ids, torch.randn(BATCH))
