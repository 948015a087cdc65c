"""Chapter 9: parallel data, the encoder-decoder beam adapter, zh BLEU, the shipped model.

Reference libraries: sacrebleu (BLEU with tokenize="zh", chrF, the zh tokeniser) and a
brute-force search over every target sequence (for beam search).
"""

import gzip
import itertools
import json
import math
import random

import pytest
import sacrebleu
import torch
from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

from llmbook.data import parallel
from llmbook.data.parallel import (
    PARALLEL_COUNT,
    CharVocab,
    Pair,
    clean_message,
    clean_pair,
    deduplicate_pairs,
    load_parallel,
    parallel_sources,
    references_by_source,
    source_key,
    split_of,
    write_parallel,
)
from llmbook.decoding import beam_search
from llmbook.metrics import corpus_chrf
from llmbook.model import EncoderDecoder
from llmbook.translate import (
    DecoderAsLM,
    DictionaryBaseline,
    MTConfig,
    beam_translate,
    build_model,
    copy_baseline,
    corpus_bleu_zh,
    cross_attention,
    load_mt,
    sample_sources,
    tokenize_zh,
)

# --- cleaning -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Cannot find %s in %(path)s", "Cannot find X in X"),
        ("loading {name} from {0} and {}", "loading X from X and X"),
        ("see :ref:`the index <genindex>` and :py:func:`len`", "see the index and len"),
        ("Search &amp; replace &lt;here&gt;", "Search & replace <here>"),
        ("<b>bold</b> and ``code``", "bold and code"),
        ("100%% done, %5.2f left", "100% done, X left"),
        ("  many \n  spaces ", "many spaces"),
    ],
)
def test_clean_message(raw, clean):
    assert clean_message(raw) == clean


def test_clean_pair_drops_bad_pairs():
    assert clean_pair("Search %s", "搜索 %s") == ("Search X", "搜索 X")
    assert clean_pair("Search %s in %s", "搜索 %s") is None  # placeholder lost
    assert clean_pair("Search", "Search") is None  # untranslated
    assert clean_pair("%s", "%s") is None  # nothing to translate
    assert clean_pair("Search", "") is None
    assert clean_pair("a" * 81, "搜索") is None  # too long
    with pytest.raises(TypeError, match="str"):
        clean_message(None)


def test_deduplicate_keeps_first_origin_and_splits_by_source():
    raw = [("cldr", "Monday", "星期一"), ("cedict", "Monday", "星期一"),
           ("cedict", "monday.", "周一"), ("sphinx", "Search", "Search")]  # fmt: skip
    pairs = deduplicate_pairs(raw)
    assert [(p.origin, p.en, p.zh) for p in pairs] == [
        ("cldr", "Monday", "星期一"),
        ("cedict", "monday.", "周一"),
    ]
    assert pairs[0].split == pairs[1].split  # same source key, same split
    assert source_key("Monday") == source_key("monday.")


def test_split_of_is_stable_and_validated():
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefgh ") for _ in range(8)) for _ in range(2000)]
    splits = [split_of(w) for w in words]
    assert splits == [split_of(w.upper()) for w in words]
    share = splits.count("train") / len(splits)
    assert 0.86 < share < 0.94, share
    with pytest.raises(ValueError, match="fractions"):
        split_of("x", (0.5, 0.5, 0.5))


# --- the snapshot -------------------------------------------------------------------


def test_snapshot_count_hash_and_sources():
    pairs = load_parallel()
    assert len(pairs) == PARALLEL_COUNT
    sources = parallel_sources()
    assert set(sources) == {"sphinx", "cldr", "cedict"}
    assert sum(s["pairs"] for s in sources.values()) == PARALLEL_COUNT
    for origin, info in sources.items():
        assert info["license"] and info["url"]
        assert info["pairs"] == len(load_parallel(origins=[origin]))
    assert "CC BY-SA" in sources["cedict"]["license"]
    # every stored pair is already clean: cleaning it again changes nothing
    sample = random.Random(3).sample(pairs, 2000)
    assert all(clean_pair(p.en, p.zh) == (p.en, p.zh) for p in sample)
    assert len({(p.en, p.zh) for p in pairs}) == len(pairs)  # no duplicates


def test_splits_are_disjoint_by_source():
    keys = {
        s: {source_key(p.en) for p in load_parallel(s)}
        for s in ("train", "val", "test")
    }
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    assert all(p.split == split_of(p.en) for p in load_parallel("test"))


def test_snapshot_tampering_is_detected(monkeypatch, tmp_path):
    monkeypatch.setattr(parallel, "PARALLEL_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="changed"):
        load_parallel()
    path = tmp_path / "p.json.gz"
    digest = write_parallel([Pair("cldr", "Monday", "星期一", "train")],
                            {"cldr": {"pairs": 1}}, path)  # fmt: skip
    assert len(digest) == 64
    assert json.loads(gzip.decompress(path.read_bytes()))["pairs"][0][1] == "Monday"
    assert load_parallel(path=path)[0].zh == "星期一"
    with pytest.raises(ValueError, match="split"):
        load_parallel("dev", path=path)
    with pytest.raises(ValueError, match="unknown origins"):
        load_parallel(origins=["wiki"], path=path)


def test_char_vocab_round_trip():
    vocab = CharVocab.build(["搜索文档", "搜索"], min_count=2)
    assert vocab.itos[4:] == sorted("搜索")
    ids = vocab.encode("搜索文")
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert ids[3] == vocab.unk_id  # 文 is seen once: below min_count
    assert vocab.decode(ids) == "搜索<unk>"
    assert vocab.decode([vocab.stoi["搜"], vocab.eos_id, vocab.stoi["索"]]) == "搜"


# --- beam search through the adapter -----------------------------------------------


def tiny_model(seed: int, vocab: int = 5) -> EncoderDecoder:
    torch.manual_seed(seed)
    model = EncoderDecoder(
        7, vocab, d_model=16, n_heads=2, n_layers=1, context_length=16
    )
    for p in model.parameters():  # sharper distributions than the default init
        torch.nn.init.normal_(p, std=0.5)
    return model.eval()


@torch.no_grad()
def brute_force(model, src, bos, eos, max_new, vocab):
    """The best sequence by total log-probability over every possible output."""
    lm = DecoderAsLM(model, src)
    best, best_score = None, -math.inf
    for n in range(1, max_new + 1):
        for tail in itertools.product(range(vocab), repeat=n):
            if eos in tail[:-1] or (n < max_new and tail[-1] != eos):
                continue
            seq = torch.tensor([[bos, *tail]])
            logp = torch.log_softmax(lm(seq)[0, :-1].double(), -1)
            score = float(logp[torch.arange(n), torch.tensor(tail)].sum())
            if score > best_score:
                best, best_score = [bos, *tail], score
    return best, best_score


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_adapter_matches_brute_force(seed):
    vocab, bos, eos, max_new = 5, 0, 1, 3
    model = tiny_model(seed, vocab)
    src = torch.randint(
        0, 7, (3 + seed,), generator=torch.Generator().manual_seed(seed)
    )
    expected, _ = brute_force(model, src.tolist(), bos, eos, max_new, vocab)
    got = beam_search(DecoderAsLM(model, src.tolist()), torch.tensor([[bos]]), max_new,
                      num_beams=vocab ** (max_new - 1), eos_id=eos, length_penalty=0.0,
                      use_cache=False)  # fmt: skip
    got = got[0, : len(expected)].tolist()
    assert got == expected


@pytest.mark.parametrize("seed", [3, 4])
def test_one_beam_is_greedy(seed):
    model = tiny_model(seed, vocab=9)
    src = torch.randint(0, 7, (1, 5), generator=torch.Generator().manual_seed(seed))
    greedy = model.greedy_decode(src, bos_id=0, max_len=8)[0]
    beam = beam_search(DecoderAsLM(model, src[0].tolist()), torch.tensor([[0]]), 7,
                       num_beams=1, use_cache=False)[0]  # fmt: skip
    assert beam.tolist() == greedy.tolist()


def test_adapter_errors_and_banned_tokens():
    with pytest.raises(ValueError, match="src_ids"):
        DecoderAsLM(tiny_model(0), [])
    model = tiny_model(6, vocab=5)
    plain = DecoderAsLM(model, [1, 2, 3])
    favourite = int(plain(torch.tensor([[0]]))[0, -1].argmax())
    lm = DecoderAsLM(model, [1, 2, 3], banned=[favourite])
    out = beam_search(lm, torch.tensor([[0]]), 6, num_beams=3, use_cache=False)
    assert favourite not in out[0, 1:].tolist()


def test_cross_attention_maps_reproduce_the_decoder():
    model = tiny_model(5, vocab=9)
    gen = torch.Generator().manual_seed(5)
    src, tgt = (
        torch.randint(0, 7, (6,), generator=gen),
        torch.randint(0, 9, (4,), generator=gen),
    )
    maps = cross_attention(model, src.tolist(), tgt.tolist())
    assert maps.shape == (1, 2, 4, 6)
    assert torch.allclose(maps.sum(-1), torch.ones(1, 2, 4), atol=1e-6)
    # recompute layer 0's cross-attention by hand from its projections
    block = model.decoder[0]
    memory = model.encode(src[None])
    x = model._embed(model.tgt_emb, tgt[None])
    h = block.ln1(x + block.self_attn(x, is_causal=True))
    attn = block.cross_attn
    q = attn.q_proj(h).view(1, 4, 2, 8).transpose(1, 2)
    k = attn.k_proj(memory).view(1, 6, 2, 8).transpose(1, 2)
    expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1)[0]
    assert torch.allclose(maps[0], expected, atol=1e-5)


# --- metrics ------------------------------------------------------------------------


def test_tokenize_zh_equals_sacrebleu_on_every_code_point():
    ref = TokenizerZh()
    codes = [c for c in range(0x20, 0x30000) if not 0xD800 <= c <= 0xDFFF]
    for i in range(0, len(codes), 400):  # 400 code points per line, between letters
        text = "a".join(chr(c) for c in codes[i : i + 400])
        assert tokenize_zh(text) == ref(text).split(), hex(codes[i])


def random_zh_text(rng, chars):
    return "".join(rng.choice(chars) for _ in range(rng.randint(1, 12)))


@pytest.mark.parametrize("seed", [0, 1])
def test_bleu_zh_and_chrf_equal_sacrebleu(seed):
    rng = random.Random(seed)
    test = load_parallel("test")
    refs = references_by_source(test)
    sources = rng.sample(list(refs), 300)
    chars = list("".join(refs[s][0] for s in sources)) + list(" ab1.,，。X")
    hyps = [random_zh_text(rng, chars) if rng.random() < 0.7 else refs[s][0]
            for s in sources]  # fmt: skip
    ref_lists = [refs[s] for s in sources]
    width = max(len(r) for r in ref_lists)
    streams = [[r[j] if j < len(r) else None for r in ref_lists] for j in range(width)]
    expected = sacrebleu.corpus_bleu(hyps, streams, tokenize="zh").score
    assert corpus_bleu_zh(hyps, ref_lists) == pytest.approx(expected, abs=1e-9)
    expected_chrf = sacrebleu.corpus_chrf(hyps, streams).score
    assert corpus_chrf(hyps, streams) == pytest.approx(expected_chrf, abs=1e-9)


def test_bleu_zh_errors():
    with pytest.raises(ValueError, match="one reference list per hypothesis"):
        corpus_bleu_zh(["搜索"], [["搜索"], ["文档"]])
    with pytest.raises(ValueError, match="non-empty list"):
        corpus_bleu_zh(["搜索"], ["搜索"])


# --- baselines and the shipped model ------------------------------------------------


def test_dictionary_baseline():
    train = [Pair("cedict", "red", "红", "train"), Pair("cedict", "to eat", "吃", "train"),
             Pair("cedict", "red", "红色", "train"), Pair("cedict", "red", "红", "train")]  # fmt: skip
    lookup = DictionaryBaseline(train)
    assert lookup(["Red", "eat red apples"]) == ["红", "吃红apples"]
    assert copy_baseline(["Red"]) == ["Red"]


def test_test_sources_are_an_even_sample():
    test = load_parallel("test")
    sample = sample_sources(test, 400)
    assert len(sample) == len(set(sample)) == 400
    keys = {source_key(p.en) for p in load_parallel("train")}
    assert not keys & {source_key(s) for s in sample}


def test_shipped_model_loads_and_reproduces_its_record():
    from llmbook.translate import greedy_translate

    model, src_tok, vocab, meta = load_mt("course-mt")
    assert isinstance(model, EncoderDecoder) and not model.training
    assert model.out.weight is model.tgt_emb.weight
    assert sum(p.numel() for p in model.parameters()) == meta["n_params"]
    # the recorded training really ran: the validation loss fell
    assert meta["history"]["val_loss"][-1] < meta["history"]["val_loss"][0] - 0.5
    # the shipped weights give the recorded greedy scores on the recorded sample
    test = load_parallel("test")
    refs = references_by_source(test)
    sources = sample_sources(test, meta["test"]["n_sources"])
    hyps = greedy_translate(model, sources, src_tok, vocab)
    ref_lists = [refs[s] for s in sources]
    assert corpus_bleu_zh(hyps, ref_lists) == pytest.approx(
        meta["test"]["greedy_bleu"], abs=0.006
    )
    assert all(tok not in h for h in hyps for tok in ("<unk>", "<pad>", "<bos>"))
    # beam search leaves the model in eval mode: the same call gives the same output
    first = beam_translate(model, sources[:20], src_tok, vocab, num_beams=3)
    assert not model.training
    assert beam_translate(model, sources[:20], src_tok, vocab, num_beams=3) == first


def test_build_model_ties_output_to_target_embedding():
    model = build_model(MTConfig(d_model=32, n_heads=2, n_layers=1, d_ff=64), 11, 13)
    assert model.out.weight is model.tgt_emb.weight
    assert model.tgt_emb.weight.std().item() == pytest.approx(32**-0.5, rel=0.25)


# --- alignment maps -----------------------------------------------------------------


def test_alignment_maps_figure_and_explorer():
    from llmbook.translate import SourceTokenizer
    from llmbook.viz.alignment_view import (
        AlignmentExplorer,
        alignment_figure,
        alignment_maps,
    )

    src_tok = SourceTokenizer()
    vocab = CharVocab(list("搜索文档"))
    torch.manual_seed(0)
    model = build_model(MTConfig(d_model=32, n_heads=2, n_layers=2, d_ff=64),
                        src_tok.vocab_size, len(vocab)).eval()  # fmt: skip
    maps = alignment_maps(model, src_tok, vocab, "Search the docs", max_len=6)
    n_src = len(src_tok.encode("Search the docs"))
    n_tgt = len(maps["translation"]) + 1
    assert maps["attentions"].shape == (2, 2, n_tgt, n_src)
    assert maps["src_tokens"][-1] == "</s>" and len(maps["src_tokens"]) == n_src
    assert maps["tgt_tokens"] == [*maps["translation"], "</s>"]
    fig = alignment_figure(maps, layer=1, head=None)
    drawn = fig.axes[0].images[0].get_array()
    assert torch.allclose(
        torch.as_tensor(drawn.data), maps["attentions"][1].mean(0).double()
    )
    with pytest.raises(ValueError, match="layer"):
        alignment_figure(maps, layer=2)
    with pytest.raises(ValueError, match="non-empty"):
        alignment_maps(model, src_tok, vocab, "  ")
    explorer = AlignmentExplorer(model, src_tok, vocab, "Search")
    box = explorer.widget
    assert explorer.last_maps["src_tokens"] == src_tok.tokens("Search")
    box.controls["text"].value = "Search the docs"
    box.controls["layer"].value = 1
    assert explorer.last_maps["src_tokens"] == maps["src_tokens"]
    assert box.controls["head"].options[0] == ("mean", -1)
