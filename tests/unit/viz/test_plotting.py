"""llmbook.viz.plotting: the heatmaps show exactly the weights passed in, with labels."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from llmbook.viz.plotting import plot_attention, plot_heads  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(3)


def random_weights(gen, *shape):
    return torch.softmax(torch.randn(*shape, generator=gen), dim=-1)


def tick_labels(ax, axis):
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in ticks]


def test_heatmap_shows_the_weights_and_labels(gen):
    weights = random_weights(gen, 3, 5)  # 3 queries, 5 keys
    q_tokens, k_tokens = ["a", "b", "c"], ["k0", "k1", "k2", "k3", "k4"]
    ax = plot_attention(weights, q_tokens, k_tokens, title="cross")
    np.testing.assert_array_equal(ax.images[0].get_array(), weights.numpy())
    assert tick_labels(ax, "x") == k_tokens
    assert tick_labels(ax, "y") == q_tokens
    assert ax.get_title() == "cross"
    assert ax.get_xlabel().startswith("key") and ax.get_ylabel().startswith("query")


def test_heatmap_defaults_to_self_attention_labels_and_given_axes(gen):
    weights = random_weights(gen, 4, 4)
    fig, ax = plt.subplots()
    returned = plot_attention(weights, list("wxyz"), ax=ax, colorbar=False)
    assert returned is ax
    assert tick_labels(ax, "x") == tick_labels(ax, "y") == list("wxyz")
    assert len(fig.axes) == 1  # no colour bar axes added


def test_heatmap_accepts_grad_tensors_numpy_and_lists(gen):
    weights = random_weights(gen, 2, 2).requires_grad_()
    ax = plot_attention(weights, ["a", "b"])
    np.testing.assert_allclose(ax.images[0].get_array(), weights.detach().numpy())
    ax = plot_attention([[1, 0], [0.5, 0.5]], ["a", "b"])
    np.testing.assert_array_equal(ax.images[0].get_array(), [[1, 0], [0.5, 0.5]])
    mask = torch.ones(3, 3, dtype=torch.bool).tril()
    ax = plot_attention(mask, list("abc"), annotate=True)
    np.testing.assert_array_equal(ax.images[0].get_array(), mask.float().numpy())
    assert len(ax.texts) == 9


def test_heatmap_colour_scale_defaults_to_zero_and_can_be_fixed(gen):
    weights = random_weights(gen, 3, 3)
    ax = plot_attention(weights, list("abc"))
    assert ax.images[0].norm.vmin == 0.0
    assert ax.images[0].norm.vmax == pytest.approx(float(weights.max()))
    ax = plot_attention(weights, list("abc"), vmax=1.0)
    assert ax.images[0].norm.vmax == 1.0


@pytest.mark.parametrize(
    ("shape", "q", "k", "message"),
    [
        (
            (3, 4),
            list("abc"),
            list("abc"),
            "k_tokens has 3 tokens but the weights have 4 columns",
        ),
        (
            (3, 4),
            list("ab"),
            list("abcd"),
            "q_tokens has 2 tokens but the weights have 3 rows",
        ),
        ((2, 3, 3), list("abc"), None, "expects a 2-D"),
    ],
)
def test_heatmap_shape_errors_are_clear(gen, shape, q, k, message):
    with pytest.raises(ValueError, match=message):
        plot_attention(random_weights(gen, *shape), q, k)


def test_heatmap_rejects_a_string_of_tokens(gen):
    with pytest.raises(TypeError, match="sequence of token strings"):
        plot_attention(random_weights(gen, 3, 3), "abc")


def test_heads_grid_has_one_panel_per_head_in_order(gen):
    weights = random_weights(gen, 6, 5, 5)  # 6 heads
    tokens = ["The", "cat", "sat", "down", "."]
    fig = plot_heads(weights, tokens, ncols=4)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 6
    for h, ax in enumerate(panels):
        np.testing.assert_array_equal(ax.images[0].get_array(), weights[h].numpy())
        assert ax.get_title() == f"head {h}"
        assert ax.images[0].norm.vmax == pytest.approx(float(weights.max()))
    # 2 rows x 4 columns: the two unused panels are switched off
    grid = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(grid) == 8
    assert sum(not ax.axison for ax in grid) == 2
    # labels on the left column and the bottom of each column only
    assert tick_labels(panels[0], "y") == tokens
    assert all(t == "" for t in tick_labels(panels[1], "y"))
    assert tick_labels(panels[5], "x") == tokens  # bottom of column 1
    assert tick_labels(panels[3], "x") == tokens  # column 3 has nothing below
    assert all(t == "" for t in tick_labels(panels[0], "x"))


def test_heads_custom_titles_and_errors(gen):
    weights = random_weights(gen, 2, 3, 3)
    fig = plot_heads(weights, list("abc"), titles=["first", "second"], suptitle="L0")
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["first", "second"]
    assert fig.get_suptitle() == "L0"
    with pytest.raises(ValueError, match=r"expects \(n_heads, n_q, n_k\)"):
        plot_heads(weights[0], list("abc"))
    with pytest.raises(ValueError, match="tokens has 2 tokens"):
        plot_heads(weights, list("ab"))
    with pytest.raises(ValueError, match="got 1 titles for 2 heads"):
        plot_heads(weights, list("abc"), titles=["only one"])
    with pytest.raises(ValueError, match="ncols must be >= 1"):
        plot_heads(weights, list("abc"), ncols=0)
