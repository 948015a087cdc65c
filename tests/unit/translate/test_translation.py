"""Chapter 9: parallel data, the encoder-decoder beam adapter, zh BLEU, the shipped model.

Reference libraries: sacrebleu (BLEU with tokenize="zh", chrF, the zh tokeniser),
Hugging Face tokenizers (the BPEs) and a brute-force search over every target
sequence (for beam search).
"""

import gzip
import itertools
import json
import math
import random
import re

import pytest
import sacrebleu
import torch
from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

from llmbook.data import parallel
from llmbook.data.parallel import (
    CATALOGS,
    PARALLEL_COUNT,
    CharVocab,
    Pair,
    clean_message,
    clean_pair,
    deduplicate_pairs,
    load_parallel,
    n_words,
    parallel_sources,
    references_by_source,
    source_key,
    split_of,
    strip_accelerators,
    write_parallel,
)
from llmbook.decoding import beam_search
from llmbook.metrics import corpus_chrf
from llmbook.model import EncoderDecoder
from llmbook.translate import (
    DecoderAsLM,
    DictionaryBaseline,
    MTConfig,
    SourceTokenizer,
    ZhBPE,
    beam_translate,
    build_model,
    copy_baseline,
    corpus_bleu_zh,
    cross_attention,
    evaluate_mt,
    greedy_translate,
    load_mt,
    sample_sources,
    tokenize_zh,
    verdict_line,
    verdict_pairs,
)
from llmbook.translate.__main__ import main as mt_main

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
        # LibreOffice and JupyterLab catalogs
        ("%1 of %2 pages", "X of X pages"),
        ("Cannot open $(ARG1).", "Cannot open X."),
        ("The function “$functionname$” failed", "The function “X” failed"),
        ("Restart %PRODUCTNAME now", "Restart X now"),
        ("~Open a ~File", "Open a File"),
        ("&Edit and &amp; save", "Edit and & save"),
        ("打开(~O)", "打开"),
        ("自动(_A)", "自动"),
        ("Run ${command} in {{ path }}", "Run X in X"),
        ("Line one<BR>line two", "Line oneline two"),
    ],
)
def test_clean_message(raw, clean):
    assert clean_message(raw) == clean


def test_underscore_mnemonics_only_where_asked():
    assert strip_accelerators("Re_lative to") == "Re_lative to"  # not a GTK catalog
    assert strip_accelerators("Re_lative to", underscore=True) == "Relative to"
    assert strip_accelerators("_Automatic", underscore=True) == "Automatic"
    # two underscores: an identifier, not a label
    assert strip_accelerators("jupyter_server_config", underscore=True) == (
        "jupyter_server_config"
    )
    assert clean_pair("Re_lative to", "相对于(_L)", underscore=True) == (
        "Relative to", "相对于")  # fmt: skip


def test_clean_pair_drops_bad_pairs():
    assert clean_pair("Search %s", "搜索 %s") == ("Search X", "搜索 X")
    assert clean_pair("Search %s in %s", "搜索 %s") is None  # placeholder lost
    assert clean_pair("Search", "Search") is None  # untranslated
    assert clean_pair("%s", "%s") is None  # nothing to translate
    assert clean_pair("Search", "") is None
    assert clean_pair("a" * 121, "搜索") is None  # too long
    with pytest.raises(TypeError, match="str"):
        clean_message(None)


def test_deduplicate_on_english_and_splits_by_source():
    raw = [("cldr", "Monday", "星期一"), ("cedict", "Monday", "周一"),
           ("sphinx", "monday.", "周一"), ("sphinx", "Search", "Search")]  # fmt: skip
    pairs = deduplicate_pairs(raw)
    assert [(p.origin, p.en, p.zh) for p in pairs] == [
        ("cldr", "Monday", "星期一"),  # the first origin wins; one pair per English
        ("sphinx", "monday.", "周一"),
    ]
    assert pairs[0].split == pairs[1].split  # same source key, same split


def test_near_duplicates_share_a_key_and_a_split():
    group = ["Search %s:", "search", "Search {0}.", "SEARCH !", "~Search"]
    keys = {source_key(clean_message(t)) for t in group}
    assert keys == {"search"}
    assert len({split_of(clean_message(t)) for t in group}) == 1
    assert source_key("Search the docs") != source_key("Search")


def test_auxiliary_dictionary_pairs_stay_in_training():
    words = [f"word{i}" for i in range(400)]
    pairs = deduplicate_pairs(("cedict", w, "词") for w in words)
    assert {p.split for p in pairs} == {"train"}
    assert len(pairs) == sum(split_of(w) == "train" for w in words) < 400


def test_split_of_is_stable_and_validated():
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefgh ") for _ in range(8)) for _ in range(2000)]
    splits = [split_of(w) for w in words]
    assert splits == [split_of(w.upper()) for w in words]
    share = splits.count("train") / len(splits)
    assert 0.85 < share < 0.91, share
    with pytest.raises(ValueError, match="fractions"):
        split_of("x", (0.5, 0.5, 0.5))


# --- the snapshot -------------------------------------------------------------------


def test_snapshot_count_hash_and_sources():
    pairs = load_parallel()
    assert len(pairs) == PARALLEL_COUNT
    sources = parallel_sources()
    assert set(sources) == {*CATALOGS, "cldr", "cedict"}
    assert sum(s["pairs"] for s in sources.values()) == PARALLEL_COUNT
    for origin, info in sources.items():
        assert info["license"] and info["url"] and info["version"]
        assert info["pairs"] == len(load_parallel(origins=[origin]))
    assert "CC BY-SA" in sources["cedict"]["license"]
    assert sources["libreoffice"]["license"] == "MPL-2.0"
    assert sources["jupyterlab"]["license"] == "BSD-3-Clause"
    # every stored pair is already clean: cleaning it again changes nothing
    sample = random.Random(3).sample(pairs, 2000)
    assert all(clean_pair(p.en, p.zh) == (p.en, p.zh) for p in sample)
    assert len({p.en for p in pairs}) == len(pairs)  # one pair per English source


def test_sentence_level_catalog_data_is_the_bulk():
    pairs = load_parallel()
    sentences = [p for p in pairs if p.origin in CATALOGS and n_words(p.en) >= 3]
    assert len(sentences) >= 15_000
    cedict = load_parallel(origins=["cedict"])
    assert len(cedict) < len(pairs) / 4  # auxiliary, not the bulk
    assert {p.split for p in cedict} == {"train"}  # never validation or test
    test = verdict_pairs()
    assert len(test) >= 1_000 and {p.origin for p in test} <= set(CATALOGS)
    assert min(n_words(p.en) for p in test) >= 3


def test_splits_are_disjoint_by_source():
    keys = {
        s: {source_key(p.en) for p in load_parallel(s)}
        for s in ("train", "val", "test")
    }  # source_key groups near-duplicates (placeholders, case, punctuation)
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    assert all(p.split == split_of(p.en) for p in load_parallel("test"))


def test_snapshot_tampering_is_detected(monkeypatch, tmp_path):
    monkeypatch.setattr(parallel, "PARALLEL_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="changed"):
        load_parallel()
    monkeypatch.undo()
    # one pair edited in a copy of the shipped file: its hash no longer matches
    payload = json.loads(gzip.decompress(parallel.PARALLEL_PATH.read_bytes()))
    payload["pairs"][5][2] += "。"
    edited = tmp_path / "edited.json.gz"
    edited.write_bytes(gzip.compress(json.dumps(payload, ensure_ascii=False).encode()))
    monkeypatch.setattr(parallel, "PARALLEL_PATH", edited)
    with pytest.raises(RuntimeError, match="changed"):
        parallel._verified(None)
    monkeypatch.undo()
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


def test_sample_is_every_kth_and_held_out():
    test = verdict_pairs()
    sample = sample_sources(test, 400)
    assert len(sample) == len({p.en for p in sample}) == 400
    step = len(test) / 400
    assert sample[7] == test[int(7 * step)]
    keys = {source_key(p.en) for p in load_parallel("train")}
    assert not keys & {source_key(p.en) for p in sample}


@pytest.fixture(scope="module")
def shipped():
    return load_mt("course-mt")


def test_shipped_model_loads_and_records_its_training(shipped):
    model, src_tok, vocab, meta = shipped
    assert isinstance(model, EncoderDecoder) and not model.training
    assert model.out.weight is model.tgt_emb.weight
    assert sum(p.numel() for p in model.parameters()) == meta["n_params"]
    assert meta["command"].startswith("python -m llmbook.translate --out")
    assert meta["history"]["step"][-1] == meta["config"]["max_steps"]
    # the recorded training really ran: the validation loss fell
    assert meta["history"]["val_loss"][-1] < meta["history"]["val_loss"][0] - 0.5
    assert meta["test"]["chrF"] >= 2 * max(
        meta["test"]["copy"], meta["test"]["dictionary"]
    )


def test_shipped_model_beats_copy_and_dictionary(shipped):
    """Every 6th sentence-level test source (about 280), greedy: well above both
    baselines, and the output is Chinese text without special tokens."""
    model, src_tok, vocab, _ = shipped
    pairs = verdict_pairs()[::6]
    result = evaluate_mt(model, src_tok, vocab, pairs)
    s = result["scores"]
    assert s["model"]["chrF"] > 1.5 * max(s["copy"]["chrF"], s["dictionary"]["chrF"])
    diff, low, high = result["model_minus_dictionary"]
    assert low > 0 and low <= diff <= high
    hyps = result["outputs"]["model"]
    assert all(tok not in h for h in hyps for tok in ("<unk>", "<pad>", "<bos>"))
    # beam search leaves the model in eval mode: the same call gives the same output
    sources = [p.en for p in pairs[:5]]
    first = beam_translate(model, sources, src_tok, vocab, num_beams=3)
    assert not model.training
    assert beam_translate(model, sources, src_tok, vocab, num_beams=3) == first


VERDICT = re.compile(
    r"^(\S+) chrF (\d+\.\d\d), BLEU (\d+\.\d\d); copy chrF (\d+\.\d\d); "
    r"dictionary chrF (\d+\.\d\d); (\d+) test sources$"
)


def test_evaluate_command_ends_with_the_verdict_line(capsys):
    mt_main(["--evaluate", "course-mt", "--max-sources", "24"])
    lines = capsys.readouterr().out.strip().splitlines()
    m = VERDICT.match(lines[-1])
    assert m, lines[-1]
    assert m.group(1) == "course-mt" and m.group(6) == "24"
    assert "decoding: greedy" in lines[-2]
    # the line's numbers are the scores of the same 24 sources, recomputed
    model, src_tok, vocab, _ = load_mt("course-mt")
    pairs = sample_sources(verdict_pairs(), 24)
    hyps = greedy_translate(model, [p.en for p in pairs], src_tok, vocab)
    refs = [p.zh for p in pairs]
    assert float(m.group(2)) == pytest.approx(corpus_chrf(hyps, [refs]), abs=0.006)
    assert float(m.group(3)) == pytest.approx(
        sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score, abs=0.006
    )
    copy = sacrebleu.corpus_chrf([p.en for p in pairs], [refs]).score
    assert float(m.group(4)) == pytest.approx(copy, abs=0.006)
    fake = {"n": 3, "scores": {"model": {"chrF": 40.0, "BLEU": 35.5},
                               "copy": {"chrF": 4.0}, "dictionary": {"chrF": 9.25}}}  # fmt: skip
    assert verdict_line(fake) == (
        "course-mt chrF 40.00, BLEU 35.50; copy chrF 4.00; dictionary chrF 9.25; "
        "3 test sources"
    )


def test_tokenizers_round_trip():
    texts = ["Search the documentation", "Open a file", "Save the file as X"]
    src_tok = SourceTokenizer.train(texts * 5, vocab_size=300)
    ids = src_tok.encode("Save the documentation")
    assert ids[-1] == src_tok.eos_id and src_tok.tok.decode(ids[:-1]) == (
        "Save the documentation")  # fmt: skip
    assert "".join(src_tok.tokens("Open it")[:-1]).replace("▁", " ") == "Open it"
    zh = ZhBPE.train(
        ["搜索文档", "打开文件", "保存文件"] * 5, vocab_size=40, min_count=2
    )
    ids = zh.encode("保存文档")
    assert ids[0] == zh.bos_id and ids[-1] == zh.eos_id
    assert zh.decode(ids) == "保存文档"
    assert len(ids) < 2 + 4  # at least one merge ("文件" or "文档") was used


def test_build_model_ties_output_to_target_embedding():
    model = build_model(MTConfig(d_model=32, n_heads=2, n_layers=1, d_ff=64), 11, 13)
    assert model.out.weight is model.tgt_emb.weight
    assert model.tgt_emb.weight.std().item() == pytest.approx(32**-0.5, rel=0.25)


# --- alignment maps -----------------------------------------------------------------


def test_alignment_maps_figure_and_explorer():
    from llmbook.viz.alignment_view import (
        AlignmentExplorer,
        alignment_figure,
        alignment_maps,
    )

    src_tok = SourceTokenizer.train(["Search the docs", "Search"] * 3, vocab_size=280)
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


def test_a_short_training_run_learns_and_repeats_bit_for_bit(tmp_path):
    """``train_mt`` steps through the package's one training step: a tiny model's
    training loss falls within 40 steps, and the same config and seed give the same
    weights twice."""
    from llmbook.translate.model import MTConfig
    from llmbook.translate.training import train_mt

    config = MTConfig(d_model=32, n_heads=2, n_layers=1, d_ff=64, batch_size=16,
                      max_steps=40, warmup_steps=4, src_vocab_size=500, lr=3e-3)  # fmt: skip
    runs = [train_mt(config, log_every=10, val_every=40, bf16=False) for _ in range(2)]
    (model, _, _, history), (again, _, _, _) = runs
    assert history["step"] == [10, 20, 30, 40] and history["val_step"] == [40]
    assert history["train_loss"][-1] < history["train_loss"][0] - 0.5
    for a, b in zip(
        model.state_dict().values(), again.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
