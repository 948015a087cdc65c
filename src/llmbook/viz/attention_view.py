"""A self-contained attention viewer that works without a Python kernel.

:func:`attention_view` turns precomputed attention weights of shape
``(n_layers, n_heads, n_q, n_k)`` into a small HTML page fragment with its own inline
JavaScript and CSS: a layer selector, a head selector (or the mean over heads), a
token-to-token heatmap, and a query-token highlight (hover a row or a query token to
preview where it looks; click to pin it). The weights travel inside the fragment as
JSON (integers, rounded to ``decimals`` places), so the view needs no network access
and no running kernel: it works the same in Jupyter, in Colab and on the static pages
of the book, where ``ipywidgets`` cannot run.

``AttentionExplorer`` (``llmbook.viz.explorer``) stays the tool for live recomputation;
this view only shows what was computed.

Hooks for scripts and tests (all inside the element with ``id == view.element_id``):

* the root ``div.llmbook-attn`` carries ``data-n-layers``, ``data-n-heads``,
  ``data-n-q``, ``data-n-k``, ``data-layer``, ``data-head`` (a number or ``mean``),
  ``data-selected-query`` (``-1`` when none) and ``data-ready="1"`` once drawn;
* ``select[data-role=layer]`` and ``select[data-role=head]``;
* ``th[data-role=query][data-q=i]``, ``th[data-role=key][data-k=j]``;
* ``td[data-role=cell][data-q=i][data-k=j]`` with ``data-value`` (the shown weight);
  cells of the highlighted row have the class ``llmbook-attn-on``;
* ``[data-role=info]``: a one-line readout of the highlighted row;
* ``script[type="application/json"][data-role=data]``: the embedded weights.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AttentionView", "attention_view"]

_COUNTER = itertools.count()


class AttentionView:
    """A rendered attention view: show it with ``display`` or save it as a page.

    Attributes:
        html: the HTML fragment (a ``div`` plus its ``style`` and ``script``).
        element_id: the root element's id, unique per view in one Python process.
        shape: ``(n_layers, n_heads, n_q, n_k)`` of the embedded weights.
    """

    def __init__(self, fragment: str, element_id: str, shape: tuple[int, ...]):
        self.html = fragment
        self.element_id = element_id
        self.shape = shape

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        n_layers, n_heads, n_q, n_k = self.shape
        return (
            f"AttentionView({n_layers} layers x {n_heads} heads, "
            f"{n_q} queries x {n_k} keys, id={self.element_id!r})"
        )

    def to_page(self, title: str = "Attention") -> str:
        """A complete standalone HTML document holding this view."""
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n</head>\n<body>\n{self.html}\n"
            "</body>\n</html>\n"
        )

    def save(self, path: str | Path, title: str = "Attention") -> Path:
        """Write the view as a standalone HTML file (no external requests); return it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_page(title), encoding="utf-8")
        return path


def _as_array(weights: Any) -> np.ndarray:
    if hasattr(weights, "detach"):  # a torch tensor, on any device
        weights = weights.detach().to("cpu").float().numpy()
    try:
        arr = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            "attention weights must be a tensor, an array or nested lists of numbers, "
            f"got {type(weights).__name__}"
        ) from err
    if arr.ndim == 2:  # one map
        arr = arr[None, None]
    elif arr.ndim == 3:  # the heads of one layer
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(
            "attention weights must have shape (n_layers, n_heads, n_q, n_k) "
            f"(or (n_heads, n_q, n_k), or (n_q, n_k)), got {arr.shape}"
        )
    if 0 in arr.shape:
        raise ValueError(f"attention weights are empty: shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("attention weights must be finite (no nan or inf)")
    return arr


def _as_tokens(tokens: Any, name: str) -> list[str]:
    if isinstance(tokens, str):
        raise TypeError(f"{name} must be a list of strings, not one string")
    if tokens is None:
        raise TypeError(f"{name} is missing: pass one token string per position")
    return [str(t) for t in tokens]


def _encode_json(obj: Any) -> str:
    """JSON that is safe inside a <script> element (no '<', '>' or '&')."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def attention_view(
    maps_or_tensor: Any,
    tokens: Sequence[str] | None = None,
    *,
    cross_tokens: Sequence[str] | None = None,
    layer: int = 0,
    head: int | None = 0,
    decimals: int = 3,
    vmax: float | None = None,
    cell_px: int = 22,
    title: str | None = None,
) -> AttentionView:
    """Render precomputed attention weights as a self-contained interactive view.

    Args:
        maps_or_tensor: weights of shape ``(n_layers, n_heads, n_q, n_k)``; a torch
            tensor, numpy array or nested lists. ``(n_heads, n_q, n_k)`` and
            ``(n_q, n_k)`` are read as one layer / one head. A dict with keys
            ``"tokens"`` and ``"attentions"`` (one entry of
            ``llmbook.model.encoders.attention_maps``) supplies both weights and tokens.
        tokens: the query tokens, one per row (``n_q``); for self-attention also the
            key tokens. Optional when ``maps_or_tensor`` is a dict.
        cross_tokens: the key tokens, one per column (``n_k``), for cross-attention
            (queries from one sequence, keys from another). None = self-attention,
            which requires ``n_q == n_k``.
        layer, head: what is shown first; ``head=None`` starts on the mean over heads.
        decimals: weights are rounded to this many decimal places (1 to 6) before
            they are embedded; 3 keeps a 6 x 12 x 20 x 20 view near 100 kB.
        vmax: the weight drawn darkest; None uses 1.0 when all weights are in
            [0, 1] (attention weights) and the largest weight otherwise. The
            lightest colour is min(0, smallest weight).
        cell_px: the side of one heatmap cell, in CSS pixels.
        title: a caption above the controls.

    Returns:
        An :class:`AttentionView`; its ``_repr_html_`` shows it in a notebook and
        ``.save(path)`` writes a standalone page.

    Raises:
        ValueError: wrong number of dimensions, token counts that do not match the
            weights, non-finite weights, or ``layer``/``head``/``decimals`` out of
            range.
        TypeError: tokens given as one string, or missing.
    """
    if isinstance(maps_or_tensor, Mapping):
        if "attentions" not in maps_or_tensor:
            raise ValueError(
                "a dict of attention maps needs the key 'attentions' (and 'tokens'), "
                f"got keys {sorted(maps_or_tensor)}"
            )
        if tokens is None:
            tokens = maps_or_tensor.get("tokens")
        maps_or_tensor = maps_or_tensor["attentions"]
    elif isinstance(maps_or_tensor, (list, tuple)) and maps_or_tensor:
        if isinstance(maps_or_tensor[0], Mapping):
            raise TypeError(
                "got a list of attention maps: pass one of them, e.g. maps[0], "
                "and call attention_view once per sentence"
            )
    weights = _as_array(maps_or_tensor)
    n_layers, n_heads, n_q, n_k = weights.shape
    q_tokens = _as_tokens(tokens, "tokens")
    if len(q_tokens) != n_q:
        raise ValueError(
            f"got {len(q_tokens)} tokens but the weights have n_q = {n_q} query rows "
            f"(shape {weights.shape}); pass one token per query"
        )
    if cross_tokens is None:
        if n_q != n_k:
            raise ValueError(
                f"self-attention weights must be square, got n_q = {n_q} and "
                f"n_k = {n_k}; for cross-attention pass cross_tokens (the keys)"
            )
        k_tokens = q_tokens
        kind = "self"
    else:
        k_tokens = _as_tokens(cross_tokens, "cross_tokens")
        if len(k_tokens) != n_k:
            raise ValueError(
                f"got {len(k_tokens)} cross_tokens but the weights have n_k = {n_k} "
                f"key columns (shape {weights.shape}); pass one token per key"
            )
        kind = "cross"
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer must be in [0, {n_layers - 1}], got {layer}")
    if head is not None and not 0 <= head < n_heads:
        raise ValueError(f"head must be in [0, {n_heads - 1}] or None, got {head}")
    if not 1 <= decimals <= 6:
        raise ValueError(f"decimals must be in [1, 6], got {decimals}")

    scale = 10**decimals
    quantised = np.rint(weights * scale).astype(np.int64)
    lo = min(0.0, float(weights.min()))
    if vmax is None:
        vmax = 1.0 if weights.max() <= 1.0 and weights.min() >= 0.0 else weights.max()
    vmax = float(vmax)
    if not vmax > lo:
        vmax = lo + 1.0
    payload = {
        "shape": [n_layers, n_heads, n_q, n_k],
        "scale": scale,
        "decimals": decimals,
        "vmin": lo,
        "vmax": vmax,
        "kind": kind,
        "query_tokens": q_tokens,
        "key_tokens": k_tokens,
        "values": quantised.ravel().tolist(),
    }
    data = _encode_json(payload)
    digest = hashlib.sha1(data.encode()).hexdigest()[:8]
    element_id = f"llmbook-attn-{digest}-{next(_COUNTER)}"
    fragment = _render(
        element_id, data, payload, layer, head, cell_px, title, q_tokens, k_tokens
    )
    return AttentionView(fragment, element_id, (n_layers, n_heads, n_q, n_k))


_CSS = """
.llmbook-attn{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
 font-size:13px;color:#222;background:#fff;padding:8px;border:1px solid #ddd;
 border-radius:6px;display:inline-block;max-width:100%;overflow-x:auto;
 box-sizing:border-box}
.llmbook-attn .llmbook-attn-title{font-weight:600;margin-bottom:4px}
.llmbook-attn .llmbook-attn-controls{margin-bottom:6px}
.llmbook-attn .llmbook-attn-controls label{margin-right:12px}
.llmbook-attn select{font-size:13px;color:#222;background:#fff}
.llmbook-attn table{border-collapse:collapse;margin:0;border:0;width:auto}
.llmbook-attn td,.llmbook-attn th{padding:0;border:0;background:none}
.llmbook-attn td[data-role=cell]{width:var(--cell);height:var(--cell);
 min-width:var(--cell);border:1px solid #fff;box-sizing:border-box;cursor:pointer}
.llmbook-attn th[data-role=query]{text-align:right;padding-right:6px;
 font-weight:normal;white-space:nowrap;cursor:pointer}
.llmbook-attn th[data-role=key]{vertical-align:bottom;font-weight:normal;
 padding-bottom:4px;height:1px}
.llmbook-attn th[data-role=key] span{writing-mode:vertical-rl;
 transform:rotate(180deg);white-space:nowrap;display:inline-block;
 border-radius:3px;padding:2px 0}
.llmbook-attn.llmbook-attn-focus td[data-role=cell]{opacity:.25}
.llmbook-attn.llmbook-attn-focus td.llmbook-attn-on{opacity:1}
.llmbook-attn th.llmbook-attn-on{font-weight:700;color:#b00}
.llmbook-attn .llmbook-attn-info{margin-top:6px;min-height:1.4em}
.llmbook-attn .llmbook-attn-axis{color:#666;font-size:12px}
"""

_JS = """
(function(){
var root=document.getElementById(__ROOT_ID__);
if(!root||root.getAttribute("data-ready")==="1")return;
var D=JSON.parse(root.querySelector('script[data-role="data"]').textContent);
var L=D.shape[0],H=D.shape[1],Q=D.shape[2],K=D.shape[3],V=D.values,S=D.scale;
var layerSel=root.querySelector('select[data-role="layer"]');
var headSel=root.querySelector('select[data-role="head"]');
var cells=root.querySelectorAll('td[data-role="cell"]');
var qh=root.querySelectorAll('th[data-role="query"]');
var kh=root.querySelectorAll('th[data-role="key"] span');
var info=root.querySelector('[data-role="info"]');
var pinned=-1,shown=[];
function w(l,h,q,k){return V[((l*H+h)*Q+q)*K+k]/S;}
function current(){
 var l=+layerSel.value,hv=headSel.value,out=new Array(Q*K),q,k,h,s;
 for(q=0;q<Q;q++)for(k=0;k<K;k++){
  if(hv==="mean"){s=0;for(h=0;h<H;h++)s+=w(l,h,q,k);out[q*K+k]=s/H;}
  else out[q*K+k]=w(l,+hv,q,k);}
 return out;}
function colour(x){
 var t=Math.max(0,Math.min(1,(x-D.vmin)/(D.vmax-D.vmin)));
 var r=Math.round(255-t*(255-8)),g=Math.round(255-t*(255-48)),
  b=Math.round(255-t*(255-107));
 return "rgb("+r+","+g+","+b+")";}
function fmt(x){return x.toFixed(D.decimals);}
function focus(q){
 var i,k;
 root.classList.toggle("llmbook-attn-focus",q>=0);
 for(i=0;i<cells.length;i++)
  cells[i].classList.toggle("llmbook-attn-on",Math.floor(i/K)===q);
 for(i=0;i<qh.length;i++)qh[i].classList.toggle("llmbook-attn-on",i===q);
 for(k=0;k<K;k++)kh[k].style.backgroundColor=q>=0?colour(shown[q*K+k]):"";
 for(k=0;k<K;k++)kh[k].style.color=q>=0&&shown[q*K+k]>0.6*D.vmax?"#fff":"";
 if(q<0){info.textContent="Hover or click a query token (a row) to see where it looks.";
  return;}
 var order=[];for(k=0;k<K;k++)order.push(k);
 order.sort(function(a,b){return shown[q*K+b]-shown[q*K+a];});
 var parts=[];for(k=0;k<Math.min(3,K);k++)
  parts.push(D.key_tokens[order[k]]+" "+fmt(shown[q*K+order[k]]));
 info.textContent="\\u201c"+D.query_tokens[q]+"\\u201d looks at: "+parts.join(", ");}
function draw(){
 shown=current();
 for(var i=0;i<cells.length;i++){
  var x=shown[i];cells[i].style.backgroundColor=colour(x);
  cells[i].setAttribute("data-value",fmt(x));
  cells[i].title=D.query_tokens[Math.floor(i/K)]+" \\u2192 "+
   D.key_tokens[i%K]+": "+fmt(x);}
 root.setAttribute("data-layer",layerSel.value);
 root.setAttribute("data-head",headSel.value);
 focus(pinned);}
function rowOf(el){var q=el.getAttribute("data-q");return q===null?-1:+q;}
function enter(e){var q=rowOf(e.currentTarget);if(q>=0)focus(q);}
function leave(){focus(pinned);}
function click(e){
 var q=rowOf(e.currentTarget);pinned=(q===pinned)?-1:q;
 root.setAttribute("data-selected-query",String(pinned));focus(pinned);}
var i,targets=[];
for(i=0;i<cells.length;i++)targets.push(cells[i]);
for(i=0;i<qh.length;i++)targets.push(qh[i]);
for(i=0;i<targets.length;i++){
 targets[i].addEventListener("mouseenter",enter);
 targets[i].addEventListener("mouseleave",leave);
 targets[i].addEventListener("click",click);}
layerSel.addEventListener("change",draw);
headSel.addEventListener("change",draw);
draw();
root.setAttribute("data-ready","1");
})();
"""


def _render(
    element_id: str,
    data: str,
    payload: dict[str, Any],
    layer: int,
    head: int | None,
    cell_px: int,
    title: str | None,
    q_tokens: list[str],
    k_tokens: list[str],
) -> str:
    n_layers, n_heads, n_q, n_k = payload["shape"]
    esc = html.escape

    def options(n: int, chosen: int | None, mean: bool) -> str:
        items = [
            f'<option value="{i}"{" selected" if i == chosen else ""}>{i}</option>'
            for i in range(n)
        ]
        if mean:
            sel = " selected" if chosen is None else ""
            items.append(f'<option value="mean"{sel}>mean</option>')
        return "".join(items)

    heading = "".join(
        f'<th data-role="key" data-k="{k}"><span>{esc(t)}</span></th>'
        for k, t in enumerate(k_tokens)
    )
    rows = []
    for q, t in enumerate(q_tokens):
        cells = "".join(
            f'<td data-role="cell" data-q="{q}" data-k="{k}"></td>' for k in range(n_k)
        )
        rows.append(f'<tr><th data-role="query" data-q="{q}">{esc(t)}</th>{cells}</tr>')
    kind = payload["kind"]
    axis = (
        "rows: queries, columns: keys (self-attention)"
        if kind == "self"
        else "rows: queries, columns: keys from the other sequence (cross-attention)"
    )
    caption = f'<div class="llmbook-attn-title">{esc(title)}</div>' if title else ""
    js = _JS.replace("__ROOT_ID__", json.dumps(element_id))
    return (
        f"<style>{_CSS}</style>"
        f'<div class="llmbook-attn" id="{element_id}" style="--cell:{int(cell_px)}px"'
        f' data-kind="{kind}" data-n-layers="{n_layers}" data-n-heads="{n_heads}"'
        f' data-n-q="{n_q}" data-n-k="{n_k}" data-layer="{layer}"'
        f' data-head="{"mean" if head is None else head}" data-selected-query="-1">'
        f"{caption}"
        '<div class="llmbook-attn-controls">'
        f'<label>layer <select data-role="layer">{options(n_layers, layer, False)}'
        "</select></label>"
        f'<label>head <select data-role="head">{options(n_heads, head, n_heads > 1)}'
        "</select></label>"
        f'<span class="llmbook-attn-axis">{axis}</span></div>'
        f"<table><tr><th></th>{heading}</tr>{''.join(rows)}</table>"
        '<div class="llmbook-attn-info" data-role="info"></div>'
        f'<script type="application/json" data-role="data">{data}</script>'
        "</div>"
        f"<script>{js}</script>"
    )
