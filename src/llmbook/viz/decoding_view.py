"""Watch decoding settings reshape the next-token distribution (Chapter 6).

Two forms of one picture, both computed with the course's own decoding code
(:func:`llmbook.decoding.process_logits` and :func:`llmbook.decoding.generate`):

* :func:`llmbook.viz.explorer.decoding_explorer`: ipywidgets for Colab and Jupyter.
  Edit the prompt, move the temperature, top-k, top-p and min-p sliders, and see the
  top tokens after processing as bars plus a seeded sampled continuation ("resample"
  changes the seed). Its pictures come from :func:`decoding_figure` and
  :func:`sample_continuation` here, plain functions that work without a frontend.
* :func:`decoding_view`: a kernel-free HTML view for the static book, in the spirit of
  ``llmbook.viz.attention_view``. Every combination on a small grid of settings is
  computed in advance and embedded as JSON; three selects pick one.

Hooks of the HTML view (all inside the element with ``id == view.element_id``):

* the root ``div.llmbook-dec`` carries ``data-temperature``, ``data-top-k``,
  ``data-top-p`` (the selected values), ``data-row`` (the index into the embedded
  rows) and ``data-ready="1"`` once drawn;
* ``select[data-role=temperature]``, ``select[data-role=top-k]``,
  ``select[data-role=top-p]``; their option values are the settings ("off" for no
  top-k);
* ``[data-role=bar]`` with ``data-token`` (the raw token text), ``data-token-id`` and
  ``data-prob`` (the shown probability), most likely first;
* ``[data-role=continuation]`` (the sampled text) and ``[data-role=info]``;
* ``script[type="application/json"][data-role=data]``: the embedded grid.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from llmbook.decoding import SamplingConfig, generate, process_logits
from llmbook.viz.attention_view import _encode_json

__all__ = [
    "DecodingView",
    "decoding_figure",
    "decoding_view",
    "sample_continuation",
    "visible",
]

_COUNTER = itertools.count()
DECIMALS = 4  # embedded probabilities are rounded to this many decimal places


def visible(token: str) -> str:
    """``token`` with its whitespace made visible: space ␣, newline ↵, tab ⇥,
    carriage return ``\\r``; the empty string is ∅ (all in matplotlib's font)."""
    shown = token.replace(" ", "\u2423").replace("\n", "\u21b5")
    return shown.replace("\t", "\u21e5").replace("\r", "\\r") or "\u2205"


def _prompt_ids(model: nn.Module, tokenizer, prompt: str) -> Tensor:
    """The prompt's token ids, (1, seq), on the model's device."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    ids = list(tokenizer.encode(prompt))
    if not ids:
        raise ValueError(f"the tokenizer turned the prompt {prompt!r} into no tokens")
    return torch.tensor([ids], device=next(model.parameters()).device)


@torch.no_grad()
def _last_logits(model: nn.Module, ids: Tensor) -> Tensor:
    """Next-token logits (1, vocab) after ``ids`` (1, seq), in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return model(ids[:, -model.config.context_length :])[:, -1].float()
    finally:
        model.train(was_training)


def _config(temperature: float, top_k: int | None, top_p: float | None, min_p=None):
    if not math.isfinite(float(temperature)):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    return SamplingConfig(float(temperature), top_k, top_p, min_p)


def _probs(logits: Tensor, ids: Tensor, config: SamplingConfig) -> Tensor:
    """The distribution the next token is drawn from, (vocab,) on the CPU; greedy
    decoding puts probability 1 on the argmax."""
    processed = process_logits(logits, ids, config)[0]
    if config.greedy:
        probs = torch.zeros_like(processed).scatter_(0, processed.argmax()[None], 1.0)
    else:
        probs = torch.softmax(processed, dim=-1)
    return probs.cpu()


def _top(probs: Tensor, n_tokens: int) -> tuple[list[int], list[float]]:
    """The ``n_tokens`` most likely token ids with non-zero probability."""
    values, order = torch.topk(probs, min(n_tokens, probs.numel()))
    keep = values > 0
    return order[keep].tolist(), values[keep].tolist()


def sample_continuation(
    model: nn.Module,
    tokenizer,
    prompt: str,
    config: SamplingConfig | None = None,
    n_tokens: int = 30,
    seed: int = 0,
) -> str:
    """The text ``generate`` adds after ``prompt``: ``n_tokens`` tokens drawn with
    ``config`` from a generator seeded with ``seed`` (same inputs, same text)."""
    ids = _prompt_ids(model, tokenizer, prompt)
    config = SamplingConfig() if config is None else config
    gen = torch.Generator(device=ids.device).manual_seed(int(seed))
    extra = {"top_p": config.top_p, "min_p": config.min_p}
    out = generate(model, ids, n_tokens, config.temperature, config.top_k, gen, **extra)
    return tokenizer.decode(out[0, ids.shape[1] :].tolist())


def decoding_figure(
    model: nn.Module,
    tokenizer,
    prompt: str,
    config: SamplingConfig | None = None,
    n_tokens: int = 15,
) -> Figure:
    """Horizontal bars of the ``n_tokens`` most likely next tokens after ``config``
    is applied (tokens it removes get no bar); returns the closed Figure."""
    ids = _prompt_ids(model, tokenizer, prompt)
    config = SamplingConfig() if config is None else config
    probs = _probs(_last_logits(model, ids), ids, config)
    top_ids, top_p = _top(probs, n_tokens)
    labels = [visible(tokenizer.decode([i])) for i in top_ids]
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(top_ids) + 1.2), layout="constrained")
    ax.barh(range(len(top_ids)), top_p, color="#08306b")
    ax.set_yticks(range(len(top_ids)), labels=labels)
    ax.invert_yaxis()  # most likely on top
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability of the next token")
    kept = int((probs > 0).sum())
    ax.set_title(
        f"T={config.temperature:g}, top-k={config.top_k or 'off'}, "
        f"top-p={config.top_p or 1:g}, min-p={config.min_p or 0:g}: "
        f"{kept} of {probs.numel()} tokens kept",
        fontsize=10,
    )
    plt.close(fig)
    return fig


# --- the kernel-free view --------------------------------------------------------------


class DecodingView:
    """A rendered decoding view: show it with ``display`` or save it as a page.

    Attributes:
        html: the HTML fragment (a ``div`` plus its ``style`` and ``script``).
        element_id: the root element's id, unique per view in one Python process.
        shape: ``(n_temperatures, n_top_ks, n_top_ps)`` of the embedded grid.
    """

    def __init__(self, fragment: str, element_id: str, shape: tuple[int, int, int]):
        self.html = fragment
        self.element_id = element_id
        self.shape = shape

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"DecodingView(grid {self.shape}, id={self.element_id!r})"

    def to_page(self, title: str = "Decoding") -> str:
        """A complete standalone HTML document holding this view."""
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n</head>\n<body>\n{self.html}\n"
            "</body>\n</html>\n"
        )

    def save(self, path: str | Path, title: str = "Decoding") -> Path:
        """Write the view as a standalone HTML file (no external requests); return it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_page(title), encoding="utf-8")
        return path


def _grid(name: str, values: Sequence[Any]) -> list[Any]:
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty: give at least one setting")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has repeated settings: {values}")
    return values


def decoding_view(
    model: nn.Module,
    tokenizer,
    prompt: str,
    temperatures: Sequence[float] = (0.0, 0.5, 0.8, 1.0, 1.5),
    top_ks: Sequence[int | None] = (None, 5, 20),
    top_ps: Sequence[float] = (1.0, 0.9, 0.5),
    n_tokens: int = 15,
    continuation_tokens: int = 30,
    seed: int = 0,
) -> DecodingView:
    """Precompute every (temperature, top-k, top-p) on the grid into a kernel-free view.

    Args:
        model: maps (batch, seq) ids to (batch, seq, vocab) logits; has a
            ``config.context_length`` (a ``llmbook.model.GPT``).
        tokenizer: has ``encode(str) -> list[int]`` and ``decode(list[int]) -> str``.
        prompt: the text whose next token is shown (non-empty).
        temperatures: settings >= 0; 0 is greedy (probability 1 on the argmax).
        top_ks: settings >= 1, or None for no top-k filter.
        top_ps: settings in (0, 1]; 1 keeps every token.
        n_tokens: at most this many bars (tokens a filter removes get none).
        continuation_tokens: length of each sampled continuation, drawn by
            ``generate`` with a generator seeded with ``seed`` (the same for every
            combination, so only the settings differ).

    Raises:
        ValueError: an empty prompt or grid, repeated settings, a temperature < 0,
            top-k < 1, top-p outside (0, 1], or n_tokens < 1.
    """
    temperatures = [float(t) for t in _grid("temperatures", temperatures)]
    top_ks = [None if k is None else int(k) for k in _grid("top_ks", top_ks)]
    top_ps = [1.0 if p is None else float(p) for p in _grid("top_ps", top_ps)]
    configs = [
        _config(t, k, p) for t, k, p in itertools.product(temperatures, top_ks, top_ps)
    ]
    if n_tokens < 1 or continuation_tokens < 0:
        raise ValueError(
            f"n_tokens must be >= 1 and continuation_tokens >= 0, got {n_tokens} "
            f"and {continuation_tokens}"
        )
    ids = _prompt_ids(model, tokenizer, prompt)
    logits = _last_logits(model, ids)
    scale = 10**DECIMALS
    table: dict[int, int] = {}  # token id -> index into the embedded token lists
    texts: dict[str, int] = {}  # continuation -> index into the embedded texts
    rows = []
    continuations: dict[tuple, str] = {}  # greedy ignores top-k and top-p
    for config in configs:
        probs = _probs(logits, ids, config)
        top_ids, top_probs = _top(probs, n_tokens)
        key = (
            (0.0,)
            if config.greedy
            else (config.temperature, config.top_k, config.top_p)
        )
        if key not in continuations:
            continuations[key] = sample_continuation(
                model, tokenizer, prompt, config, continuation_tokens, seed
            )
        text = continuations[key]
        rows.append(
            [
                [table.setdefault(i, len(table)) for i in top_ids],
                [round(p * scale) for p in top_probs],
                int((probs > 0).sum()),
                texts.setdefault(text, len(texts)),
            ]
        )
    tokens = [tokenizer.decode([i]) for i in table]
    payload = {
        "prompt": prompt,
        "temperatures": temperatures,
        "top_ks": top_ks,
        "top_ps": top_ps,
        "vocab_size": int(logits.shape[-1]),
        "scale": scale,
        "decimals": DECIMALS,
        "ids": list(table),
        "tokens": tokens,
        "labels": [visible(t) for t in tokens],
        "continuations": list(texts),
        "rows": rows,  # [token indices, probabilities * scale, kept, continuation]
    }
    data = _encode_json(payload)
    digest = hashlib.sha1(data.encode()).hexdigest()[:8]
    element_id = f"llmbook-dec-{digest}-{next(_COUNTER)}"
    shape = (len(temperatures), len(top_ks), len(top_ps))
    return DecodingView(_render(element_id, data, payload), element_id, shape)


_CSS = """
.llmbook-dec{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
 font-size:13px;color:#222;background:#fff;padding:8px;border:1px solid #ddd;
 border-radius:6px;max-width:100%;box-sizing:border-box}
.llmbook-dec .llmbook-dec-controls label{margin-right:12px}
.llmbook-dec select{font-size:13px;color:#222;background:#fff}
.llmbook-dec .llmbook-dec-bar{display:flex;align-items:center;height:18px;margin:1px 0}
.llmbook-dec .llmbook-dec-label{width:9em;text-align:right;padding-right:6px;
 white-space:pre;overflow:hidden;text-overflow:ellipsis;font-family:monospace}
.llmbook-dec .llmbook-dec-track{flex:1;max-width:360px;height:14px;background:#f0f0f0}
.llmbook-dec .llmbook-dec-fill{display:block;height:100%;background:#08306b}
.llmbook-dec .llmbook-dec-val{width:4.5em;padding-left:6px;
 font-variant-numeric:tabular-nums}
.llmbook-dec .llmbook-dec-info{color:#666;font-size:12px;margin:6px 0}
.llmbook-dec .llmbook-dec-text{white-space:pre-wrap;margin-top:6px;padding:6px;
 background:#f7f7f7;border-radius:4px;font-family:monospace}
.llmbook-dec .llmbook-dec-prompt{color:#666}
.llmbook-dec [data-role=continuation]{color:#08306b;font-weight:600}
"""

_JS = """
(function(){
var root=document.getElementById(__ROOT_ID__);
if(!root||root.getAttribute("data-ready")==="1")return;
var D=JSON.parse(root.querySelector('script[data-role="data"]').textContent);
var sel={};["temperature","top-k","top-p"].forEach(function(n){
 sel[n]=root.querySelector('select[data-role="'+n+'"]');});
var bars=root.querySelector('[data-role="bars"]');
var cont=root.querySelector('[data-role="continuation"]');
var info=root.querySelector('[data-role="info"]');
function el(cls,text){var e=document.createElement("span");e.className=cls;
 if(text!==undefined)e.textContent=text;return e;}
function draw(){
 var t=sel.temperature.selectedIndex,k=sel["top-k"].selectedIndex,
  p=sel["top-p"].selectedIndex,i=(t*D.top_ks.length+k)*D.top_ps.length+p,R=D.rows[i];
 bars.textContent="";
 for(var j=0;j<R[0].length;j++){
  var x=R[1][j]/D.scale,s=x.toFixed(D.decimals),a=R[0][j],row=el("llmbook-dec-bar");
  row.setAttribute("data-role","bar");row.setAttribute("data-token",D.tokens[a]);
  row.setAttribute("data-token-id",String(D.ids[a]));row.setAttribute("data-prob",s);
  var label=el("llmbook-dec-label",D.labels[a]),track=el("llmbook-dec-track"),
   fill=el("llmbook-dec-fill");
  label.title=JSON.stringify(D.tokens[a]);fill.style.width=(100*x)+"%";
  track.appendChild(fill);row.appendChild(label);row.appendChild(track);
  row.appendChild(el("llmbook-dec-val",s));bars.appendChild(row);}
 cont.textContent=D.continuations[R[3]];
 info.textContent=D.temperatures[t]===0?
  "greedy: always the most likely token (top-k and top-p change nothing)":
  R[2]+" of "+D.vocab_size+" tokens keep a chance; the "+R[0].length+
  " most likely are shown";
 root.setAttribute("data-row",String(i));
 for(var n in sel)root.setAttribute("data-"+n,sel[n].value);}
for(var n in sel)sel[n].addEventListener("change",draw);
draw();
root.setAttribute("data-ready","1");
})();
"""


def _select(role: str, values: list[Any], start: int, notes: dict[str, str]) -> str:
    """A labelled select whose option values are the settings ("off" for None)."""
    shown = ["off" if x is None else f"{x:g}" for x in values]
    opts = "".join(
        f'<option value="{v}"{" selected" * (i == start)}>{v}{notes.get(v, "")}</option>'
        for i, v in enumerate(shown)
    )
    return f'<label>{role} <select data-role="{role}">{opts}</select></label>'


def _render(element_id: str, data: str, payload: dict[str, Any]) -> str:
    esc = html.escape
    temps = payload["temperatures"]
    start = temps.index(1.0) if 1.0 in temps else 0
    controls = (
        _select("temperature", temps, start, {"0": " (greedy)"})
        + _select("top-k", payload["top_ks"], 0, {})
        + _select("top-p", payload["top_ps"], 0, {"1": " (off)"})
    )
    js = _JS.replace("__ROOT_ID__", json.dumps(element_id))
    return (
        f"<style>{_CSS}</style>"
        f'<div class="llmbook-dec" id="{element_id}">'
        f'<div class="llmbook-dec-controls">{controls}</div>'
        '<div class="llmbook-dec-info" data-role="info"></div>'
        '<div data-role="bars"></div>'
        f'<div class="llmbook-dec-text"><span class="llmbook-dec-prompt">'
        f'{esc(payload["prompt"])}</span><span data-role="continuation"></span></div>'
        f'<script type="application/json" data-role="data">{data}</script>'
        "</div>"
        f"<script>{js}</script>"
    )
