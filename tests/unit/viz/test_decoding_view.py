"""The decoding explorer and view show what llmbook.decoding computes.

The embedded distributions must equal ``softmax(process_logits(...))`` to within the
view's rounding, and the continuations must be what ``generate`` returns for the same
settings and seed. What the page does in a browser is checked in tests/book/test_browser.py.
"""

import html
import json
import re
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import random_gpt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from llmbook.decoding import SamplingConfig, generate, process_logits  # noqa: E402
from llmbook.model import load_tokenizer  # noqa: E402
from llmbook.viz.decoding_view import (  # noqa: E402
    DecodingView,
    decoding_figure,
    decoding_view,
    sample_continuation,
    visible,
)
from llmbook.viz.explorer import decoding_explorer  # noqa: E402

PROMPT = "The cat sat on the"
GRID = {"temperatures": (0, 0.7, 1.3), "top_ks": (None, 3), "top_ps": (1.0, 0.6)}


class CharTokenizer:
    """One token per character, plus tokens full of HTML special characters."""

    vocab = list("abc <>&\"'\n\t\r") + ["</script>", "<b>x</b>", "&amp;", "\u00e9"]

    def encode(self, text: str) -> list[int]:
        return [self.vocab.index(ch) for ch in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)


SIZES = {"context_length": 32, "d_model": 32, "n_heads": 2, "n_layers": 1}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("course-gpt")


@pytest.fixture(scope="module")
def model(tokenizer):
    return random_gpt(11, config=SIZES, vocab_size=len(tokenizer))


@pytest.fixture(scope="module")
def view(model, tokenizer) -> DecodingView:
    return decoding_view(model, tokenizer, PROMPT, n_tokens=7, seed=3, **GRID)


def embedded(view: DecodingView) -> dict:
    match = re.search(
        r'<script type="application/json" data-role="data">(.*?)</script>',
        view.html,
        re.S,
    )
    assert match, "no embedded data block"
    return json.loads(match.group(1))


def rows(data: dict):
    """(temperature, top_k, top_p, row) for every combination, in embedded order."""
    i = 0
    for t in data["temperatures"]:
        for k in data["top_ks"]:
            for p in data["top_ps"]:
                yield t, k, p, data["rows"][i]
                i += 1


def next_logits(model, tokenizer, prompt=PROMPT):
    ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.no_grad():
        return model(ids)[:, -1].float(), ids


def test_embedded_probabilities_equal_processed_softmax(view, model, tokenizer):
    data = embedded(view)
    assert view.shape == (3, 2, 2) and len(data["rows"]) == 12
    logits, ids = next_logits(model, tokenizer)
    for t, k, p, (where, probs, kept, _) in rows(data):
        if t == 0:
            continue  # greedy: see the next test
        config = SamplingConfig(t, k, p)
        expected = torch.softmax(process_logits(logits, ids, config), dim=-1)[0]
        shown = [data["ids"][j] for j in where]
        assert kept == int((expected > 0).sum()), (t, k, p)
        assert len(shown) == min(7, kept)
        assert shown == expected.topk(len(shown)).indices.tolist(), (t, k, p)
        got = torch.tensor(probs, dtype=torch.float64) / data["scale"]
        assert torch.allclose(got, expected[shown].double(), atol=1e-3), (t, k, p)


def test_greedy_rows_put_probability_one_on_the_argmax(view, model, tokenizer):
    data = embedded(view)
    logits, _ = next_logits(model, tokenizer)
    greedy = [r for t, _, _, r in rows(data) if t == 0]
    assert len(greedy) == 4
    for where, probs, kept, _ in greedy:
        assert [data["ids"][j] for j in where] == [int(logits.argmax())]
        assert probs == [data["scale"]] and kept == 1


def test_continuations_are_what_generate_returns(view, model, tokenizer):
    data = embedded(view)
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    seen = set()
    for t, k, p, row in rows(data):
        gen = torch.Generator().manual_seed(3)
        out = generate(model, ids, 30, t, k, gen, top_p=p)
        expected = tokenizer.decode(out[0, ids.shape[1] :].tolist())
        assert data["continuations"][row[3]] == expected, (t, k, p)
        seen.add(expected)
    assert len(seen) > 2, "different settings should give different continuations"
    config = SamplingConfig(1.3)
    text = sample_continuation(model, tokenizer, PROMPT, config, 30, seed=3)
    assert text == sample_continuation(model, tokenizer, PROMPT, config, 30, seed=3)
    assert text != sample_continuation(model, tokenizer, PROMPT, config, 30, seed=4)


def test_default_grid_is_small_and_self_contained(model, tokenizer, tmp_path):
    view = decoding_view(model, tokenizer, PROMPT, continuation_tokens=10)
    assert view.shape == (5, 3, 3)
    assert len(view.html) < 30_000, f"{len(view.html)} characters"
    page = view.save(tmp_path / "decoding.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and view.element_id in page
    for tag in re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", page, re.I):
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", tag, re.I), tag
    for role in ("temperature", "top-k", "top-p"):
        assert f'<select data-role="{role}">' in view.html
    assert '<option value="1" selected>1</option>' in view.html  # T = 1 first
    assert '<option value="0">0 (greedy)</option>' in view.html


def test_token_text_is_escaped():
    tok = CharTokenizer()
    model = random_gpt(5, config=SIZES, vocab_size=len(tok.vocab))
    prompt = "a<b>&\"c'\n"
    view = decoding_view(
        model,
        tok,
        prompt,
        temperatures=(1.0,),
        top_ks=(None,),
        top_ps=(1.0,),
        n_tokens=len(tok.vocab),
        continuation_tokens=40,
    )
    data = embedded(view)
    assert sorted(data["tokens"]) == sorted(tok.vocab)  # every token, round-tripped
    assert data["labels"][data["tokens"].index("\n")] == "\u21b5"
    assert data["prompt"] == prompt
    assert view.html.count("</script>") == 2  # the data block's and the script's
    assert view.html.count("<script") == 2 and "<b>x" not in view.html
    assert "a&lt;b&gt;&amp;&quot;c&#x27;\n</span>" in view.html  # the prompt line
    block = re.search(r'data-role="data">(.*?)</script>', view.html, re.S).group(1)
    assert not set("<>&") & set(block)


def test_visible_whitespace():
    assert visible(" a\nb\t\r") == "\u2423a\u21b5b\u21e5\\r"
    assert visible("") == "\u2205"


def test_figure_labels_show_whitespace_and_draw_cleanly():
    tok = CharTokenizer()
    model = random_gpt(4, config=SIZES, vocab_size=len(tok.vocab))
    fig = decoding_figure(model, tok, "ab", SamplingConfig(2.0), n_tokens=30)
    (ax,) = fig.axes
    labels = {t.get_text() for t in ax.get_yticklabels()}
    assert labels == {visible(t) for t in tok.vocab}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a glyph missing from the font
        fig.canvas.draw()


@pytest.mark.parametrize(
    ("config", "n_bars"),
    [
        (SamplingConfig(1.0), 15),
        (SamplingConfig(0.8, top_k=4), 4),
        (SamplingConfig(0), 1),
    ],
)
def test_figure_has_one_bar_per_kept_token(model, tokenizer, config, n_bars):
    fig = decoding_figure(model, tokenizer, PROMPT, config, n_tokens=15)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.patches) == n_bars
    assert all(0 < bar.get_width() <= 1 for bar in ax.patches)
    if n_bars == 1:
        assert ax.patches[0].get_width() == 1.0
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == n_bars and not any(" " in s or "\n" in s for s in labels)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "prompt must be a non-empty string"),
        ({"temperatures": ()}, "temperatures is empty"),
        ({"top_ks": []}, "top_ks is empty"),
        ({"top_ps": ()}, "top_ps is empty"),
        ({"temperatures": (0.5, -0.1)}, "temperature must be >= 0"),
        ({"temperatures": (float("nan"),)}, "temperature must be a finite"),
        ({"top_ps": (0.0,)}, r"top_p must be in \(0, 1\]"),
        ({"top_ps": (0.9, 1.5)}, r"top_p must be in \(0, 1\]"),
        ({"top_ks": (0,)}, "top_k must be >= 1"),
        ({"top_ks": (5, 5)}, "top_ks has repeated settings"),
        ({"n_tokens": 0}, "n_tokens must be >= 1"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, message):
    tok = CharTokenizer()
    model = random_gpt(0, config=SIZES, vocab_size=len(tok.vocab))
    args = {"prompt": "abc", **kwargs}
    with pytest.raises(ValueError, match=message):
        decoding_view(model, tok, **args)


def test_explorer_widget_rerenders_and_resamples():
    tok = CharTokenizer()
    model = random_gpt(2, config=SIZES, vocab_size=len(tok.vocab))
    with pytest.raises(ValueError, match="prompt must be a non-empty string"):
        decoding_explorer(model, tok, "")
    with pytest.raises(ValueError, match="top_p must be in"):
        decoding_explorer(model, tok, "abc", top_p=0)
    box = decoding_explorer(model, tok, "abc", temperature=1.2, continuation_tokens=20)
    c = box.controls

    def shown(config: SamplingConfig, seed: int) -> bool:
        text = sample_continuation(model, tok, "abc", config, 20, seed)
        return box.text.value.endswith(f"<b>{html.escape(text)}</b></div>")

    assert shown(SamplingConfig(1.2), seed=0)
    c["resample"].click()
    assert c["seed"].value == 1 and shown(SamplingConfig(1.2), seed=1)
    assert not shown(SamplingConfig(1.2), seed=0)
    c["top_k"].value = 1  # one token left: the same text as greedy decoding
    assert shown(SamplingConfig(0), seed=1)
    c["prompt"].value = ""  # reported in the output, not raised
    assert box.text.value == ""
