"""llmbook.viz.explorer: what the widgets draw is exactly the slice asked for."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from llmbook.viz.explorer import (  # noqa: E402
    AttentionExplorer,
    entropy,
    softmax_with_temperature,
    temperature_explorer,
    temperature_figure,
)

N_LAYERS, N_HEADS = 3, 4


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def maps():
    """Two fake sentences of odd, different lengths, shaped like attention_maps()."""
    gen = torch.Generator().manual_seed(7)
    out = []
    for tokens in (["[CLS]", "it", "was", "tired", "[SEP]"], ["[CLS]", "hi", "[SEP]"]):
        n = len(tokens)
        scores = torch.randn(N_LAYERS, N_HEADS, n, n, generator=gen)
        out.append({"tokens": tokens, "attentions": torch.softmax(scores, dim=-1)})
    return out


@pytest.fixture
def explorer(maps):
    return AttentionExplorer(maps, ["It was tired.", "Hi"])


def image_of(fig):
    (ax,) = [ax for ax in fig.axes if ax.images]
    return ax, ax.images[0].get_array()


# --- AttentionExplorer -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "layer", "head"), [(0, 2, 3), (1, 0, 1), (0, 1, 0)]
)
def test_figure_shows_exactly_the_requested_slice(
    explorer, maps, sentence, layer, head
):
    fig = explorer.figure(sentence=sentence, layer=layer, head=head)
    ax, shown = image_of(fig)
    expected = maps[sentence]["attentions"][layer, head].numpy()
    np.testing.assert_array_equal(shown, expected)
    tokens = maps[sentence]["tokens"]
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens
    assert [t.get_text() for t in ax.get_yticklabels()] == tokens
    assert ax.get_title() == f"layer {layer}, head {head}"
    assert explorer.last_figure is fig


def test_head_average_option_is_the_mean_over_heads(explorer, maps):
    fig = explorer.figure(sentence=0, layer=1, head=None)
    ax, shown = image_of(fig)
    expected = maps[0]["attentions"][1].mean(dim=0).numpy()
    np.testing.assert_allclose(shown, expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(shown.sum(axis=-1), 1.0, atol=1e-6)  # still rows of 1
    assert "mean over heads" in ax.get_title()


def test_widget_rerenders_when_a_control_changes(explorer, maps):
    box = explorer.widget
    assert explorer.widget is box  # built once
    controls = box.controls
    assert controls["layer"].max == N_LAYERS - 1
    assert controls["head"].max == N_HEADS - 1
    assert [v for _, v in controls["sentence"].options] == [0, 1]

    controls["layer"].value = 2
    controls["head"].value = 3
    _, shown = image_of(explorer.last_figure)
    np.testing.assert_array_equal(shown, maps[0]["attentions"][2, 3].numpy())

    controls["sentence"].value = 1
    _, shown = image_of(explorer.last_figure)
    np.testing.assert_array_equal(shown, maps[1]["attentions"][2, 3].numpy())

    controls["average"].value = True
    assert controls["head"].disabled
    _, shown = image_of(explorer.last_figure)
    expected = maps[1]["attentions"][2].mean(dim=0).numpy()
    np.testing.assert_allclose(shown, expected, atol=1e-7)


def test_explorer_validates_its_inputs(maps):
    with pytest.raises(ValueError, match="got 2 attention maps but 1 sentences"):
        AttentionExplorer(maps, ["only one"])
    with pytest.raises(ValueError, match="maps is empty"):
        AttentionExplorer([], [])
    with pytest.raises(TypeError, match="not one string"):
        AttentionExplorer(maps[:1], "a sentence")
    bad = [{"tokens": ["a", "b"], "attentions": torch.rand(N_LAYERS, N_HEADS, 3, 3)}]
    with pytest.raises(ValueError, match=r"shape \(n_layers, n_heads, 2, 2\)"):
        AttentionExplorer(bad, ["ab"])
    with pytest.raises(ValueError, match="must have keys 'tokens' and 'attentions'"):
        AttentionExplorer([{"tokens": ["a"]}], ["a"])
    mixed = [maps[0], {"tokens": ["x"], "attentions": torch.rand(1, 1, 1, 1)}]
    with pytest.raises(ValueError, match=r"\(layers, heads\)"):
        AttentionExplorer(mixed, ["a", "b"])


def test_explorer_index_errors_name_the_valid_range(explorer):
    with pytest.raises(IndexError, match=r"layer must be in \[0, 2\], got 3"):
        explorer.figure(layer=3)
    with pytest.raises(IndexError, match=r"head must be in \[0, 3\], got 4"):
        explorer.figure(head=4)
    with pytest.raises(IndexError, match=r"sentence must be in \[0, 1\], got 2"):
        explorer.figure(sentence=2)


def test_explorer_on_real_minilm_maps():
    encoders = pytest.importorskip("llmbook.model.encoders")
    sentences = ["The cat sat.", "It was late and it rained."]
    maps = encoders.attention_maps(sentences)
    explorer = AttentionExplorer(maps, sentences)
    assert (explorer.n_layers, explorer.n_heads) == (6, 12)
    _, shown = image_of(explorer.figure(sentence=1, layer=5, head=11))
    np.testing.assert_allclose(shown, maps[1]["attentions"][5, 11].float().numpy())


# --- temperature -----------------------------------------------------------------------

SCORES = [2.0, -1.0, 0.5, 3.0, 1.0]


def test_softmax_with_temperature_one_is_plain_softmax():
    p = softmax_with_temperature(SCORES, 1.0)
    expected = torch.softmax(torch.tensor(SCORES, dtype=torch.float64), dim=0)
    torch.testing.assert_close(p, expected, rtol=0, atol=1e-12)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)


def test_temperature_to_zero_gives_one_hot_on_the_argmax():
    p = softmax_with_temperature(SCORES, 1e-4)
    expected = torch.zeros(5, dtype=torch.float64)
    expected[3] = 1.0
    torch.testing.assert_close(p, expected, rtol=0, atol=1e-12)
    assert entropy(p) == pytest.approx(0.0, abs=1e-9)


def test_temperature_to_zero_splits_ties_equally():
    p = softmax_with_temperature([1.0, 5.0, 5.0], 1e-6)
    torch.testing.assert_close(p, torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64))


def test_large_temperature_gives_near_uniform():
    p = softmax_with_temperature(SCORES, 1e4)
    torch.testing.assert_close(
        p, torch.full((5,), 0.2, dtype=torch.float64), rtol=0, atol=1e-4
    )
    assert entropy(p) == pytest.approx(math.log(5), abs=1e-6)


def test_entropy_grows_with_temperature():
    temps = [0.05, 0.3, 1.0, 3.0, 30.0]
    entropies = [entropy(softmax_with_temperature(SCORES, t)) for t in temps]
    assert entropies == sorted(entropies)
    assert all(0 <= h <= math.log(5) + 1e-12 for h in entropies)


@pytest.mark.parametrize("T", [0.0, -1.0, float("inf"), float("nan")])
def test_temperature_must_be_positive(T):
    with pytest.raises(ValueError, match="temperature T must be a positive finite"):
        softmax_with_temperature(SCORES, T)


def test_scores_must_be_a_finite_vector():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        softmax_with_temperature([[1.0, 2.0]], 1.0)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        softmax_with_temperature([], 1.0)
    with pytest.raises(ValueError, match="finite"):
        softmax_with_temperature([1.0, float("inf")], 1.0)


def test_temperature_figure_bars_and_entropy():
    labels = list("abcde")
    fig = temperature_figure(SCORES, labels, T=0.5)
    (ax,) = fig.axes
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, softmax_with_temperature(SCORES, 0.5).numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    h = entropy(softmax_with_temperature(SCORES, 0.5))
    assert f"entropy {h:.3f} nats" in ax.get_title()


def test_temperature_explorer_validates_and_has_a_log_slider():
    with pytest.raises(ValueError, match="got 5 scores but 4 labels"):
        temperature_explorer(SCORES, list("abcd"))
    with pytest.raises(ValueError, match="temperature T must be"):
        temperature_explorer(SCORES, list("abcde"), T=0)
    box = temperature_explorer(SCORES, list("abcde"))
    slider = box.controls["T"]
    assert type(slider).__name__ == "FloatLogSlider"
    assert slider.value == 1.0
    assert (slider.base**slider.min, slider.base**slider.max) == (0.01, 100)
    slider.value = 0.1  # re-renders without a frontend
