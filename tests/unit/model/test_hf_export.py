"""Exporting the course GPT to Hugging Face (``llmbook.model.hf``).

References and tolerances (float32 on the CPU; seeded random inputs drawn fresh for
each test, batch > 1, odd lengths):

* ``to_hf_gpt2`` vs our ``GPT`` with perturbed random weights (so biases and
  LayerNorm gains are far from their initial 0 and 1), with and without biases:
  logits within atol 1e-5;
* ours -> ``GPT2LMHeadModel`` -> ours (``load_hf_gpt2_weights``): bit-identical;
* ``export_hf`` of a tiny model trained here and saved by ``save_pretrained``:
  ``AutoModelForCausalLM`` logits within atol 1e-5; ``pipeline("text-generation")``
  greedy tokens identical to ``llmbook.decoding.generate(temperature=0)`` (up to the
  first end-of-text, where Hugging Face stops); ``AutoTokenizer`` ids identical.

Nothing is downloaded: Hugging Face runs with ``HF_HUB_OFFLINE=1``.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import random_gpt

from llmbook.data import course_splits, course_tokenizer
from llmbook.decoding import generate
from llmbook.model.gpt import GPT, GPTConfig, load_hf_gpt2_weights
from llmbook.model.hf import save_hf, to_hf_gpt2
from llmbook.model.pretrained import export_hf, load_tokenizer, save_pretrained

ATOL = 1e-5
VOCAB_SIZE = 2048


pytestmark = pytest.mark.usefixtures("hf_offline")


@pytest.fixture(params=[0, 1], ids=lambda s: f"seed{s}")
def gen(request):
    torch.manual_seed(2000 + request.param)  # module weights
    return torch.Generator().manual_seed(200 + request.param)  # inputs


# the random GPTs here: initialised from the seeded global generator, then every
# parameter moved by N(0, 0.1^2) drawn from the test's generator
SIZES = {"vocab_size": 97, "context_length": 24, "d_model": 32, "n_heads": 4,
         "n_layers": 2, "d_ff": 48}  # fmt: skip


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_to_hf_gpt2_logits_match(gen, bias):
    model = random_gpt(
        config=SIZES, scale=0.1, generator=gen, bias=bias, layer_norm_eps=1e-6
    )
    hf_model = to_hf_gpt2(model)
    assert hf_model.lm_head.weight is hf_model.transformer.wte.weight  # tied
    assert hf_model.config.n_positions == 24 and hf_model.config.n_inner == 48
    for length in (1, 7, 24):
        ids = torch.randint(97, (3, length), generator=gen)
        with torch.no_grad():
            theirs = hf_model(ids).logits
            ours = model(ids)
        torch.testing.assert_close(theirs, ours, rtol=0, atol=ATOL)


def test_round_trip_is_exact(gen):
    model = random_gpt(config=SIZES, scale=0.1, generator=gen)
    back = load_hf_gpt2_weights(GPT(model.config), to_hf_gpt2(model))
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    assert GPT.from_hf_gpt2(to_hf_gpt2(model)).state_dict().keys() == ours.keys()


def test_save_hf_refuses_a_tokenizer_of_another_size(tmp_path):
    model = GPT(GPTConfig(vocab_size=100))
    with pytest.raises(
        ValueError, match="tokenizer has 2048 tokens.*vocab_size is 100"
    ):
        save_hf(model, course_tokenizer(VOCAB_SIZE), tmp_path)
    with pytest.raises(TypeError, match="GPT or a MaskedLM"):
        save_hf(torch.nn.Linear(2, 2), course_tokenizer(VOCAB_SIZE), tmp_path)


# --- a tiny trained model, saved our way, exported to Hugging Face's ----------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(our model, our tokenizer, exported dir): a GPT trained for 60 steps on the
    course corpus, saved by save_pretrained and exported by export_hf."""
    torch.manual_seed(0)
    tokenizer = course_tokenizer(VOCAB_SIZE)
    docs = course_splits().train[:200]
    stream = torch.tensor([i for e in tokenizer.encode_batch(docs) for i in e.ids])
    config = GPTConfig(vocab_size=VOCAB_SIZE, context_length=32, d_model=32,
                       n_heads=4, n_layers=2)  # fmt: skip
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        starts = torch.randint(len(stream) - 33, (16,))
        block = torch.stack([stream[s : s + 33] for s in starts])  # (16, 33)
        loss = F.cross_entropy(
            model(block[:, :-1]).flatten(0, 1), block[:, 1:].flatten()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    saved = save_pretrained(model, tmp_path_factory.mktemp("ours"), tokenizer=tokenizer)
    out = export_hf(saved, tmp_path_factory.mktemp("hf") / "course-gpt-hf")
    return model.eval(), load_tokenizer(saved), out


def test_export_writes_a_native_directory(exported):
    _, _, out = exported
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["eos_token_id"] == 0
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_auto_classes_load_the_export(exported, gen):
    from transformers import AutoModelForCausalLM

    model, _, out = exported
    hf_model = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(VOCAB_SIZE, (3, 29), generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(hf_model(ids).logits, model(ids), rtol=0, atol=ATOL)


def test_auto_tokenizer_gives_our_ids(exported):
    from transformers import AutoTokenizer

    _, ours, out = exported
    theirs = AutoTokenizer.from_pretrained(out)
    assert theirs.eos_token == theirs.pad_token == "<|endoftext|>"
    assert theirs.eos_token_id == 0 and len(theirs) == VOCAB_SIZE
    texts = [
        "Return the number of items in the list.",
        "def f(x):\n    return x ** 2  # naïve 日本 🙂",
        "a<|endoftext|>b",
        "",
    ]
    for text in texts:
        assert theirs(text)["input_ids"] == ours(text)["input_ids"], text
        assert theirs.decode(ours(text)["input_ids"]) == text


def test_text_generation_pipeline_is_our_greedy_decoding(exported):
    from transformers import pipeline

    model, tokenizer, out = exported
    generator = pipeline("text-generation", model=str(out), device="cpu")
    prompts = ["Return the", "The default value of", "Create a new"]
    n_new = 12
    results = generator(prompts, max_new_tokens=n_new, do_sample=False,
                        return_tensors=True)  # fmt: skip
    for prompt, result in zip(prompts, results, strict=True):
        prompt_ids = tokenizer(prompt)["input_ids"]
        ours = generate(model, torch.tensor([prompt_ids]), n_new, temperature=0)
        ours = ours[0].tolist()
        if 0 in ours[len(prompt_ids) :]:  # Hugging Face stops at end-of-text
            ours = ours[: ours.index(0, len(prompt_ids)) + 1]
        assert result[0]["generated_token_ids"] == ours, prompt
