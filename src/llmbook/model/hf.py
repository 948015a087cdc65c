"""Moving weights between our models and Hugging Face's (Chapters 4-6).

Importing a ``GPT2LMHeadModel`` is ``GPT.from_hf_gpt2`` (with
:func:`llmbook.model.gpt.load_hf_gpt2_weights`, beside the model it fills); single
layers are copied by :func:`llmbook.model.layers.copy_linear` and ``copy_norm``.

Exporting, here: ``to_hf_gpt2`` (our ``GPT`` -> ``GPT2LMHeadModel``), ``to_hf_bert``
(our ``MaskedLM`` -> ``BertForMaskedLM``), ``hf_tokenizer`` (a ``transformers`` fast
tokenizer with the course's special tokens) and ``save_hf`` (model + tokenizer -> a
directory that ``transformers`` and its pipelines read natively, offline);
:func:`llmbook.model.pretrained.export_hf` does the same for a model saved by
``save_pretrained``. Logits agree within 1e-5 (``tests/unit/model/test_hf_export.py``,
``tests/unit/model/test_bert.py``).

``transformers`` is imported inside the export functions, so importing the model
package does not pay for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer
from torch import nn

from llmbook.data.tokenization import EOS_TOKEN, MASK_TOKEN
from llmbook.model.bert import MaskedLM
from llmbook.model.gpt import GPT
from llmbook.model.layers import LayerNorm, copy_linear

if TYPE_CHECKING:  # pragma: no cover
    from transformers import BertForMaskedLM, GPT2LMHeadModel, PreTrainedTokenizerFast

__all__ = [
    "to_hf_gpt2",
    "to_hf_bert",
    "hf_tokenizer",
    "save_hf",
]

# --- exporting ours to Hugging Face ---------------------------------------------------


@torch.no_grad()
def _copy_to_conv1d(conv: nn.Module, linears: list[nn.Linear]) -> None:
    """Fill a GPT-2 ``Conv1D`` (weight (in, out)) from ``nn.Linear`` layers (weight
    (out, in)) stacked along the output dim; a missing bias (``bias=False``) is 0."""
    conv.weight.copy_(torch.cat([lin.weight for lin in linears], dim=0).T)
    biases = [
        torch.zeros(lin.out_features) if lin.bias is None else lin.bias.cpu()
        for lin in linears
    ]
    conv.bias.copy_(torch.cat(biases))


@torch.no_grad()
def _copy_norm_out(theirs: nn.LayerNorm, ours: LayerNorm) -> None:
    """Copy our LayerNorm into Hugging Face's (a missing bias becomes zeros)."""
    theirs.weight.copy_(ours.weight)
    theirs.bias.copy_(
        ours.bias if ours.bias is not None else torch.zeros_like(ours.weight)
    )
    theirs.eps = ours.eps


def to_hf_gpt2(model: GPT) -> GPT2LMHeadModel:
    """A Hugging Face ``GPT2LMHeadModel`` (on the CPU, eval mode) computing the same
    logits as ``model`` (within float32 rounding; ``tests/unit/model/test_hf_export.py``).

    The inverse of :func:`load_hf_gpt2_weights`: each ``nn.Linear`` weight (out, in)
    is transposed into a ``Conv1D`` (in, out), W^Q, W^K, W^V are stacked into
    ``c_attn``, and the LM head stays tied to the token embedding. Sizes map as
    context_length -> n_positions, d_model -> n_embd, n_layers -> n_layer,
    n_heads -> n_head, d_ff -> n_inner; the activation is GPT-2's tanh GELU
    ("gelu_new"). A model built with ``bias=False`` exports with zero biases.
    Token id 0 (``<|endoftext|>``) is BOS, EOS and padding, as in the course
    tokenizer.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = model.config
    hf_config = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.context_length,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_inner=cfg.d_ff,
        activation_function="gelu_new",
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=0.0,  # ours never drops attention weights
        layer_norm_epsilon=cfg.layer_norm_eps,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    hf_model = GPT2LMHeadModel(hf_config).eval()
    hf = hf_model.transformer
    with torch.no_grad():
        hf.wte.weight.copy_(model.tok_emb.weight)
        hf.wpe.weight.copy_(model.pos_emb.weight)
        for block, h in zip(model.blocks, hf.h, strict=True):
            _copy_norm_out(h.ln_1, block.ln1)
            _copy_norm_out(h.ln_2, block.ln2)
            qkv = [block.attn.q_proj, block.attn.k_proj, block.attn.v_proj]
            _copy_to_conv1d(h.attn.c_attn, qkv)  # W^Q, W^K, W^V stacked
            for conv, linear in (
                (h.attn.c_proj, block.attn.out_proj),
                (h.mlp.c_fc, block.ff.fc1),
                (h.mlp.c_proj, block.ff.fc2),
            ):
                _copy_to_conv1d(conv, [linear])
        _copy_norm_out(hf.ln_f, model.ln_f)
    if hf_model.lm_head.weight is not hf.wte.weight:
        raise RuntimeError("GPT2LMHeadModel did not tie lm_head to wte")
    return hf_model


def to_hf_bert(model: MaskedLM) -> BertForMaskedLM:
    """A Hugging Face ``BertForMaskedLM`` (on the CPU, eval mode) computing the same
    logits as our ``MaskedLM`` (within float32 rounding; ``tests/unit/model/test_bert.py``).

    BERT's segment embeddings get one row (``type_vocab_size=1``) of zeros, so every
    token adds nothing for its segment; the rest maps one to one (the table in
    :mod:`llmbook.model.bert`). Sizes map as context_length ->
    max_position_embeddings, d_model -> hidden_size, d_ff -> intermediate_size;
    the activation is the exact GELU ("gelu").
    """
    from transformers import BertConfig, BertForMaskedLM

    cfg = model.config
    hf_config = BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        intermediate_size=cfg.d_ff,
        hidden_act="gelu",
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=0.0,  # ours never drops attention weights
        max_position_embeddings=cfg.context_length,
        type_vocab_size=1,
        layer_norm_eps=cfg.layer_norm_eps,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    hf_model = BertForMaskedLM(hf_config).eval()
    emb, layers = hf_model.bert.embeddings, hf_model.bert.encoder.layer
    head = hf_model.cls.predictions
    with torch.no_grad():
        emb.word_embeddings.weight.copy_(model.tok_emb.weight)
        emb.position_embeddings.weight.copy_(model.pos_emb.weight)
        emb.token_type_embeddings.weight.zero_()
        _copy_norm_out(emb.LayerNorm, model.emb_ln)
        for block, layer in zip(model.blocks, layers, strict=True):
            attn = layer.attention
            copy_linear(attn.self.query, block.attn.q_proj)
            copy_linear(attn.self.key, block.attn.k_proj)
            copy_linear(attn.self.value, block.attn.v_proj)
            copy_linear(attn.output.dense, block.attn.out_proj)
            _copy_norm_out(attn.output.LayerNorm, block.ln1)
            copy_linear(layer.intermediate.dense, block.ff.fc1)
            copy_linear(layer.output.dense, block.ff.fc2)
            _copy_norm_out(layer.output.LayerNorm, block.ln2)
        copy_linear(head.transform.dense, model.head_dense)
        _copy_norm_out(head.transform.LayerNorm, model.head_ln)
        head.bias.copy_(model.lm_head.bias)
    if head.decoder.weight is not emb.word_embeddings.weight:
        raise RuntimeError("BertForMaskedLM did not tie its decoder to the embeddings")
    return hf_model


def hf_tokenizer(
    tokenizer: Tokenizer | PreTrainedTokenizerFast,
    *,
    mask_token: str | None = None,
    model_max_length: int | None = None,
) -> PreTrainedTokenizerFast:
    """A ``transformers`` fast tokenizer with the course's special tokens set.

    ``<|endoftext|>`` (when in the vocabulary) is BOS, EOS, UNK and padding;
    ``mask_token`` (e.g. ``"<|mask|>"``), when given, must be in the vocabulary and
    becomes the tokenizer's ``mask_token`` (the fill-mask pipeline looks for it).
    A ``PreTrainedTokenizerFast`` is copied, never changed in place.
    """
    from transformers import PreTrainedTokenizerFast

    backend = (
        tokenizer if isinstance(tokenizer, Tokenizer) else tokenizer.backend_tokenizer
    )
    backend = Tokenizer.from_str(backend.to_str())
    vocab = backend.get_vocab()
    special: dict[str, str] = {}
    if EOS_TOKEN in vocab:
        special = dict.fromkeys(
            ("bos_token", "eos_token", "unk_token", "pad_token"), EOS_TOKEN
        )
    if mask_token is not None:
        if mask_token not in vocab:
            raise ValueError(
                f"mask token {mask_token!r} is not in the tokenizer's vocabulary; add "
                f"it first: tokenizer.add_special_tokens([{mask_token!r}])"
            )
        special["mask_token"] = mask_token
    wrapped = PreTrainedTokenizerFast(tokenizer_object=backend, **special)
    if model_max_length is not None:
        wrapped.model_max_length = model_max_length
    return wrapped


def save_hf(
    model: GPT | MaskedLM,
    tokenizer: Tokenizer | PreTrainedTokenizerFast,
    directory: str | Path,
    *,
    mask_token: str = MASK_TOKEN,
) -> Path:
    """Write ``model`` and ``tokenizer`` as a directory ``transformers`` reads natively.

    A ``GPT`` becomes a ``GPT2LMHeadModel`` (``pipeline("text-generation", ...)``,
    ``AutoModelForCausalLM``), a ``MaskedLM`` a ``BertForMaskedLM``
    (``pipeline("fill-mask", ...)``, ``AutoModelForMaskedLM``; the tokenizer must
    hold ``mask_token``). Writes ``config.json``, ``generation_config.json`` (GPT),
    ``model.safetensors``, ``tokenizer.json`` and ``tokenizer_config.json``.
    Raises ``ValueError`` when the tokenizer's size is not the model's vocab_size.
    """
    if isinstance(model, GPT):
        hf_model, mask = to_hf_gpt2(model), None
    elif isinstance(model, MaskedLM):
        hf_model, mask = to_hf_bert(model), mask_token
    else:
        raise TypeError(f"expected a GPT or a MaskedLM, got {type(model).__name__}")
    wrapped = hf_tokenizer(
        tokenizer, mask_token=mask, model_max_length=model.config.context_length
    )
    if len(wrapped) != model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(wrapped)} tokens but the model's vocab_size is "
            f"{model.config.vocab_size}: they do not belong together"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(directory)
    wrapped.save_pretrained(directory)
    # transformers 5 records its class as "TokenizersBackend", a name 4.x does not
    # know; "PreTrainedTokenizerFast" is the same class in 5 and loads in 4.x too.
    config_file = directory / "tokenizer_config.json"
    tokenizer_config = json.loads(config_file.read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    return directory
