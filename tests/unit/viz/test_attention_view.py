"""The kernel-free attention view: self-contained HTML, faithful data, clear errors.

The embedded weights must equal the input to within the rounding the view applies
(half a unit in the last kept decimal: 5e-4 for ``decimals=3``). What the page does in
a browser is checked in tests/book/test_browser.py.
"""

import json
import re

import numpy as np
import pytest
import torch

from llmbook.viz.attention_view import AttentionView, attention_view


def random_weights(gen, *shape):
    return torch.softmax(torch.randn(*shape, generator=gen) * 3, dim=-1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def embedded(view: AttentionView) -> dict:
    match = re.search(
        r'<script type="application/json" data-role="data">(.*?)</script>',
        view.html,
        re.S,
    )
    assert match, "no embedded data block"
    return json.loads(match.group(1))


def decoded(view: AttentionView) -> np.ndarray:
    data = embedded(view)
    return (
        np.array(data["values"], dtype=np.float64).reshape(data["shape"])
        / data["scale"]
    )


@pytest.mark.parametrize("decimals", [2, 3, 5])
def test_embedded_data_equals_input_within_rounding(gen, decimals):
    weights = random_weights(gen, 3, 4, 7, 7)  # odd lengths, several layers/heads
    view = attention_view(weights, [f"t{i}" for i in range(7)], decimals=decimals)
    assert view.shape == (3, 4, 7, 7)
    err = np.abs(decoded(view) - weights.double().numpy()).max()
    assert err <= 0.5 * 10**-decimals + 1e-12, err


def test_cross_attention_keeps_both_token_lists(gen):
    weights = random_weights(gen, 2, 3, 5, 9)  # 5 queries attend over 9 keys
    queries = ["je", "suis", "un", "chat", "."]
    keys = [f"k{j}" for j in range(9)]
    view = attention_view(weights, queries, cross_tokens=keys)
    data = embedded(view)
    assert data["kind"] == "cross"
    assert data["query_tokens"] == queries and data["key_tokens"] == keys
    assert np.allclose(decoded(view), weights.numpy(), atol=5e-4 + 1e-9)
    assert view.html.count('<td data-role="cell"') == 5 * 9


def test_accepts_attention_maps_dict_and_lower_rank_inputs(gen):
    weights = random_weights(gen, 2, 2, 4, 4)
    tokens = ["[CLS]", "a", "b", "[SEP]"]
    from_dict = attention_view({"tokens": tokens, "attentions": weights})
    assert embedded(from_dict)["query_tokens"] == tokens
    assert attention_view(weights[0], tokens).shape == (1, 2, 4, 4)  # one layer
    assert attention_view(weights[0, 0].numpy(), tokens).shape == (1, 1, 4, 4)
    assert attention_view(weights[0, 0].tolist(), tokens).shape == (1, 1, 4, 4)


def test_html_makes_no_external_requests(gen):
    view = attention_view(random_weights(gen, 2, 2, 3, 3), ["a", "b", "c"])
    page = view.to_page()
    for tag in re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", page, re.I):
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", tag, re.I), tag
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page and "url(" not in page


def test_repr_html_and_save(gen, tmp_path):
    view = attention_view(random_weights(gen, 1, 2, 3, 3), ["a", "b", "c"])
    assert view._repr_html_() == view.html
    assert view.element_id in view.html
    path = view.save(tmp_path / "sub" / "view.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and view.html in text


def test_views_on_one_page_have_distinct_ids(gen):
    weights = random_weights(gen, 1, 1, 3, 3)
    a = attention_view(weights, ["a", "b", "c"])
    b = attention_view(weights, ["a", "b", "c"])  # identical data, still distinct
    assert a.element_id != b.element_id
    # the script looks its root up by id, so each view drives only its own element
    assert f'getElementById("{a.element_id}")' in a.html
    assert f'getElementById("{b.element_id}")' not in a.html


def test_tokens_cannot_break_out_of_the_page(gen):
    tokens = ["</script><script>alert(1)</script>", "<b>", "&amp;"]
    view = attention_view(random_weights(gen, 1, 1, 3, 3), tokens)
    assert "<script>alert(1)" not in view.html
    assert "<b>" not in view.html and "&lt;b&gt;" in view.html
    assert embedded(view)["query_tokens"] == tokens  # round-trips exactly


def test_starting_layer_and_head(gen):
    weights = random_weights(gen, 3, 4, 3, 3)
    view = attention_view(weights, ["a", "b", "c"], layer=2, head=None)
    assert 'data-layer="2"' in view.html and 'data-head="mean"' in view.html
    assert '<option value="mean" selected>' in view.html


@pytest.mark.parametrize(
    ("shape", "tokens", "cross", "message"),
    [
        ((2, 2, 2, 3, 3), ["a", "b", "c"], None, r"shape \(n_layers, n_heads"),
        ((5,), ["a"], None, r"shape \(n_layers, n_heads"),
        ((1, 1, 3, 3), ["a", "b"], None, r"got 2 tokens but .* n_q = 3"),
        ((1, 1, 3, 4), ["a", "b", "c"], None, r"must be square.*cross_tokens"),
        ((1, 1, 3, 4), ["a", "b", "c"], ["x", "y"], r"got 2 cross_tokens.*n_k = 4"),
        ((1, 1, 0, 0), [], None, r"empty"),
    ],
)
def test_shape_errors_are_clear(shape, tokens, cross, message):
    with pytest.raises(ValueError, match=message):
        attention_view(np.full(shape, 0.5), tokens, cross_tokens=cross)


def test_other_errors_are_clear(gen):
    weights = random_weights(gen, 2, 3, 3, 3)
    with pytest.raises(TypeError, match="not one string"):
        attention_view(weights, "abc")
    with pytest.raises(TypeError, match="tokens is missing"):
        attention_view(weights)
    with pytest.raises(TypeError, match=r"pass one of them, e.g. maps\[0\]"):
        attention_view([{"tokens": ["a"], "attentions": weights}])
    with pytest.raises(ValueError, match=r"layer must be in \[0, 1\]"):
        attention_view(weights, ["a", "b", "c"], layer=2)
    with pytest.raises(ValueError, match=r"head must be in \[0, 2\]"):
        attention_view(weights, ["a", "b", "c"], head=3)
    with pytest.raises(ValueError, match="finite"):
        attention_view(weights * float("nan"), ["a", "b", "c"])
