"""Chapter 12 (applications): retrieval, chat templates, code completion, sandbox.

Every mechanism is compared with a reference: exact search with scikit-learn's
NearestNeighbors, chat templates with transformers' apply_chat_template, the fast
n-gram greedy rule with a brute-force argmax over the whole vocabulary, edit
similarity with rapidfuzz's fuzz.ratio and a dynamic programme, teacher-forced GPT
predictions with one forward pass per position.
"""

from __future__ import annotations

import random
import string

import numpy as np
import pytest
import torch

from llmbook.apps.chat import (
    CHATML,
    COURSE_TEMPLATE,
    ChatTemplate,
    check_messages,
    fit_to_context,
)
from llmbook.apps.codechecks import (
    doctest_check,
    doctest_tasks,
    expression_check,
    verify_exercise,
)
from llmbook.apps.codecomplete import (
    LineItem,
    first_line,
    gpt_line,
    greedy_line,
    line_prompt,
    next_line_items,
    ngram_next_token,
)
from llmbook.apps.codemeasures import (
    MEASURES,
    Completer,
    LineScores,
    completes_identifier,
    edit_similarity,
    gpt_next_tokens,
    identifier_prompts,
    identifiers,
    item_measures,
    lcs_length,
    line_tokens,
    paired_measures,
    score_item,
)
from llmbook.apps.retrieval import (
    chunk_text,
    chunks_digest,
    course_chunks,
    exact_search,
    load_index,
    rag_prompt,
    recall_at_k,
    reciprocal_rank,
)
from llmbook.apps.sandbox import isolation_available, run_python
from llmbook.data import NGramLM


@pytest.fixture(scope="module")
def tokenizer():
    from llmbook.model import load_tokenizer

    return load_tokenizer("course-gpt")


# --- retrieval ----------------------------------------------------------------------


def test_chunk_text_windows_cover_text_and_overlap():
    rng = random.Random(1)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 7)))
             for _ in range(rng.randint(150, 250))]  # fmt: skip
    text = "  \n".join(" ".join(words[i : i + 9]) for i in range(0, len(words), 9))
    chunks = chunk_text(text, max_words=37, overlap=11, title="T")
    bodies = [c.removeprefix("T: ").split() for c in chunks]
    assert all(c.startswith("T: ") for c in chunks)
    assert all(len(b) <= 37 for b in bodies)
    step = 37 - 11
    for i, b in enumerate(bodies):
        assert b == words[i * step : i * step + 37]
    assert bodies[-1][-1] == words[-1]
    assert len(chunks) == 1 + max(0, -(-(len(words) - 37) // step))


def test_chunk_text_errors():
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("a b c", max_words=3, overlap=3)
    with pytest.raises(ValueError, match="max_words"):
        chunk_text("a b c", max_words=0)
    with pytest.raises(TypeError, match="text must be a str"):
        chunk_text(["a"])
    assert chunk_text("   ") == []


def _sklearn_neighbors(queries, items, k):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute")
    nn.fit(items.numpy())
    dist, ids = nn.kneighbors(queries.numpy())
    return dist, ids


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_search_matches_sklearn_random(seed):
    gen = torch.Generator().manual_seed(seed)
    items = torch.randn(513, 48, generator=gen, dtype=torch.float64)
    queries = torch.randn(17, 48, generator=gen, dtype=torch.float64) * 3
    scores, ids = exact_search(queries, items, k=7)
    dist, ref_ids = _sklearn_neighbors(queries, items, 7)
    assert ids.shape == (17, 7) and scores.shape == (17, 7)
    np.testing.assert_array_equal(ids.numpy(), ref_ids)
    np.testing.assert_allclose(1 - scores.numpy(), dist, atol=1e-5)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])


def test_exact_search_and_recall_on_real_minilm_index():
    """The shipped MiniLM vectors; queries are items plus noise, drawn fresh."""
    chunks = [c for _, c in course_chunks()]
    index = load_index(chunks)
    assert index.shape == (len(chunks), 384)
    np.testing.assert_allclose(index.norm(dim=1).numpy(), 1.0, atol=2e-3)
    gen = torch.Generator().manual_seed(3)
    picked = torch.randperm(len(chunks), generator=gen)[:40]
    queries = index[picked] + 0.05 * torch.randn(40, 384, generator=gen)
    _, ids = exact_search(queries, index, k=10)
    dist, ref_ids = _sklearn_neighbors(queries, index, 10)
    assert (ids.numpy() == ref_ids).mean() > 0.99  # float16 ties may swap
    relevant = [{int(i)} for i in picked]
    for k in (1, 5, 10):
        ours = recall_at_k(ids.tolist(), relevant, k)
        ref = np.mean(
            [p in row[:k] for p, row in zip(picked.tolist(), ref_ids, strict=True)]
        )
        assert ours == pytest.approx(ref)
    assert recall_at_k(ids.tolist(), relevant, 1) > 0.5


def test_exact_search_errors():
    with pytest.raises(ValueError, match="last dim"):
        exact_search(torch.zeros(2, 3), torch.zeros(4, 5), 1)
    with pytest.raises(ValueError, match="2-D"):
        exact_search(torch.zeros(3), torch.zeros(4, 3), 1)
    with pytest.raises(ValueError, match="k must be"):
        exact_search(torch.ones(2, 3), torch.ones(4, 3), 5)


def test_recall_and_reciprocal_rank_by_hand_and_errors():
    rng = random.Random(5)
    ranked = [rng.sample(range(50), 20) for _ in range(30)]
    relevant = [set(rng.sample(range(50), rng.randint(1, 3))) for _ in range(30)]
    for k in (1, 3, 20):
        want = sum(
            any(r in rel for r in row[:k])
            for row, rel in zip(ranked, relevant, strict=True)
        )
        assert recall_at_k(ranked, relevant, k) == pytest.approx(want / 30)
    rr = []
    for row, rel in zip(ranked, relevant, strict=True):
        ranks = [i + 1 for i, r in enumerate(row) if r in rel]
        rr.append(1 / ranks[0] if ranks else 0.0)
    assert reciprocal_rank(ranked, relevant) == pytest.approx(np.mean(rr))
    with pytest.raises(ValueError, match="no relevant"):
        recall_at_k([[1]], [set()], 1)
    with pytest.raises(ValueError, match="one ranking per query"):
        recall_at_k([[1], [2]], [{1}], 1)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k([[1]], [{1}], 0)


def test_rag_prompt_fits_budget(tokenizer):
    rng = random.Random(2)
    chunks = [c for _, c in course_chunks()]
    question = "What does `getfirst` do?\n"
    for _ in range(5):
        passages = rng.sample(chunks, 3)
        budget = rng.randint(20, 120)
        prompt = rag_prompt(question, passages, tokenizer.encode, budget)
        assert prompt.endswith(question)
        assert len(tokenizer.encode(prompt)) <= budget
        assert prompt.startswith(passages[0].split()[0]) or prompt == question
    with pytest.raises(ValueError, match="question alone"):
        rag_prompt(question, chunks[:1], tokenizer.encode, 3)


def test_index_matches_fresh_minilm_embeddings():
    from llmbook.model.encoders import embed, load_minilm

    chunks = [c for _, c in course_chunks()]
    index = load_index(chunks)
    rows = random.Random(7).sample(range(len(chunks)), 4)
    fresh = embed([chunks[i] for i in rows], *load_minilm())
    cos = (fresh * index[rows]).sum(dim=1)
    assert torch.all(cos > 0.999), cos
    with pytest.raises(ValueError, match="other chunks"):
        load_index(chunks[:-1])
    assert chunks_digest(chunks) != chunks_digest(chunks[::-1])


# --- chat templates --------------------------------------------------------------


def _random_text(rng):
    alphabet = string.ascii_letters + " \n{}%#'\"\\<>|"
    extras = ["{{ x }}", "{% if %}", "\n\n", "<|endoftext|>", "é", "{content}"]
    parts = ["".join(rng.choices(alphabet, k=rng.randint(0, 12))) for _ in range(3)]
    return rng.choice(extras).join(parts)


def _random_conversation(rng, system):
    msgs = [{"role": "system", "content": _random_text(rng)}] if system else []
    for i in range(rng.randint(1, 6)):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant",
                     "content": _random_text(rng)})  # fmt: skip
    return msgs


def _random_template(rng):
    def fmt():
        piece = "".join(
            rng.choices(string.ascii_letters + "\n :<>|[]#", k=rng.randint(0, 6))
        )
        return piece + "{content}" + piece[::-1]

    return ChatTemplate(fmt(), fmt(), fmt(), rng.choice(["", "\n", "### A:\n"]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_render_matches_apply_chat_template(tokenizer, seed):
    rng = random.Random(seed)
    templates = [COURSE_TEMPLATE, CHATML] + [_random_template(rng) for _ in range(3)]
    for template in templates:
        jinja = template.to_jinja()
        for _ in range(8):
            msgs = _random_conversation(rng, system=rng.random() < 0.5)
            for gen in (False, True):
                ours = template.render(msgs, add_generation_prompt=gen)
                theirs = tokenizer.apply_chat_template(
                    msgs, chat_template=jinja, tokenize=False, add_generation_prompt=gen
                )
                assert ours == theirs


def test_chatml_equals_a_handwritten_chatml_jinja(tokenizer):
    chatml_jinja = (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    rng = random.Random(11)
    for _ in range(10):
        msgs = _random_conversation(rng, system=True)
        for gen in (False, True):
            assert CHATML.render(msgs, gen) == tokenizer.apply_chat_template(
                msgs,
                chat_template=chatml_jinja,
                tokenize=False,
                add_generation_prompt=gen,
            )


def test_bad_conversations_and_templates():
    with pytest.raises(ValueError, match="empty"):
        check_messages([])
    with pytest.raises(ValueError, match="unknown role"):
        check_messages([{"role": "bot", "content": "x"}])
    with pytest.raises(ValueError, match="alternate"):
        check_messages(
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
        )
    with pytest.raises(ValueError, match="only come first"):
        check_messages(
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]
        )
    with pytest.raises(TypeError, match="content must be a str"):
        check_messages([{"role": "user", "content": 3}])
    with pytest.raises(TypeError, match="list of dicts"):
        check_messages("hello")
    with pytest.raises(ValueError, match="exactly once"):
        ChatTemplate("{content}", "no placeholder", "{content}")


def test_fit_to_context_keeps_system_and_latest_turns(tokenizer):
    rng = random.Random(4)
    for _ in range(6):
        msgs = _random_conversation(rng, system=True)
        msgs = msgs if msgs[-1]["role"] == "user" else msgs[:-1]
        full = len(tokenizer.encode(COURSE_TEMPLATE.render(msgs, True)))
        minimal = len(
            tokenizer.encode(COURSE_TEMPLATE.render([msgs[0], msgs[-1]], True))
        )
        budget = rng.randint(minimal, max(minimal, full))
        kept = fit_to_context(msgs, COURSE_TEMPLATE, tokenizer.encode, budget)
        assert kept[0] == msgs[0] and kept[-1] == msgs[-1] and kept[1]["role"] == "user"
        assert kept[1:] == msgs[len(msgs) - len(kept) + 1 :]
        assert len(tokenizer.encode(COURSE_TEMPLATE.render(kept, True))) <= budget
        if len(kept) < len(msgs):  # one more exchange would not fit
            longer = [msgs[0]] + msgs[len(msgs) - len(kept) - 1 :]
            assert len(tokenizer.encode(COURSE_TEMPLATE.render(longer, True))) > budget
    with pytest.raises(ValueError, match="exceed"):
        fit_to_context(msgs, COURSE_TEMPLATE, tokenizer.encode, 1)


# --- code completion ---------------------------------------------------------------


def test_ngram_next_token_equals_brute_force_argmax():
    rng = random.Random(8)
    docs = [[rng.randint(0, 40) for _ in range(rng.randint(5, 60))] for _ in range(80)]
    for order in (2, 3, 4):
        lm = NGramLM(order, "kneser_ney", uniform=64).fit(docs)
        fast = ngram_next_token(lm)
        for _ in range(40):
            doc = rng.choice(docs)
            cut = rng.randint(0, len(doc))
            context = (
                doc[:cut]
                if rng.random() < 0.7
                else [rng.randint(0, 99) for _ in range(5)]
            )
            dist = lm.distribution(lm_context := context)
            brute = min(dist, key=lambda w: (-dist[w], str(w)))
            assert fast(lm_context) == brute


def test_ngram_next_token_needs_kneser_ney():
    lm = NGramLM(2, "add_k").fit([[1, 2, 3]])
    with pytest.raises(ValueError, match="kneser_ney"):
        ngram_next_token(lm)


def test_greedy_line_stops_at_newline():
    vocab = {1: "\n    ab", 2: "c\nd", 3: "e", 4: "x", 9: "<eos>"}
    script = iter([1, 3, 2, 1])

    def decode(ids):
        return "".join(vocab[i] for i in ids)

    assert greedy_line(lambda ids: next(script), [5], decode) == "    abec"
    assert greedy_line(lambda ids: 9, [5], decode, stop_ids=[9]) == ""
    assert greedy_line(lambda ids: 4, [5], decode, max_new_tokens=3) == ""  # no break
    seen = []
    script = iter([1, 4, 9])
    greedy_line(
        lambda ids: seen.append(list(ids)) or next(script), [5], decode, stop_ids=[9]
    )
    assert seen == [[5], [5, 1], [5, 1, 4]]
    # after a blank line: the prompt stops before it, and the model must write it
    script = iter([1, 3, 2, 1, 2])
    tokens = [next(script) for _ in range(5)]  # "\n    ab" "e" "c\nd" "\n    ab" ...
    assert first_line(iter(tokens), decode, skip_lines=1) == "d"
    assert first_line(iter(tokens), decode, skip_lines=2) == "    abc"
    assert first_line(iter(tokens[:2]), decode, skip_lines=1) == ""
    with pytest.raises(ValueError, match="skip_lines"):
        first_line(iter(tokens), decode, skip_lines=-1)


def test_line_prompt_cuts_blank_lines_and_spaces():
    assert line_prompt("def f():\n    x = 1") == ("def f():\n    x = 1", 0)
    assert line_prompt("def f():\n    x = 1\n\n") == ("def f():\n    x = 1", 2)
    assert line_prompt("    x = 1  \n   ") == ("    x = 1", 1)


def test_gpt_line_with_cache_equals_greedy_without(tokenizer):
    from llmbook.data import load_corpus
    from llmbook.data.corpus import STDLIB_MODULES
    from llmbook.model import from_pretrained

    gpt = from_pretrained("course-gpt").eval()

    @torch.no_grad()
    def no_cache(ids):
        return int(gpt(torch.tensor([ids[-(128 - 0) :]]))[0, -1].argmax())

    items = next_line_items(
        load_corpus("source", min_chars=0)[:3], STDLIB_MODULES[:3], 4, 9
    )
    eos = tokenizer.eos_token_id
    for item in items:
        ids = tokenizer.encode(item.context)[-100:]
        ours = gpt_line(gpt, ids, tokenizer.decode, max_new_tokens=20, eos_id=eos)
        ref = greedy_line(no_cache, ids, tokenizer.decode, 20, [eos])
        assert ours == ref
    with pytest.raises(ValueError, match="no room"):
        gpt_line(gpt, [1], tokenizer.decode, max_new_tokens=128)


def test_next_line_items_are_real_lines():
    from llmbook.data import load_corpus
    from llmbook.data.corpus import STDLIB_MODULES

    sources = load_corpus("source", min_chars=0)[:6]
    items = next_line_items(sources, STDLIB_MODULES[:6], n_items=30, seed=2)
    assert len(items) == 30 and len({i.module for i in items}) == 6
    for item in items:
        src = sources[STDLIB_MODULES.index(item.module)]
        assert item.context + "\n" + item.target + "\n" in src + "\n"
        assert item.target.strip() and not item.target.strip().startswith("#")
    with pytest.raises(ValueError, match="same length"):
        next_line_items(sources, STDLIB_MODULES[:2], 3)


# --- running untrusted code -----------------------------------------------------------


def test_run_python_output_errors_and_timeout():
    r = run_python("import sys; print(sum(range(10))); sys.exit(3)")
    assert r.stdout == "45\n" and r.returncode == 3 and not r.ok
    slow = run_python("while True: pass", timeout=1.0)
    assert slow.timed_out and slow.returncode is None
    assert "ModuleNotFoundError" in run_python("import numpy").stderr  # stdlib only
    with pytest.raises(ValueError, match="timeout"):
        run_python("pass", timeout=0)
    with pytest.raises(ValueError, match="isolation"):
        run_python("pass", isolation="docker")


@pytest.mark.parametrize("isolation", ["bwrap", "process"])
def test_run_python_has_no_network(isolation):
    if isolation == "bwrap" and isolation_available() != "bwrap":
        pytest.skip("bubblewrap is not available here")
    code = "import socket; socket.create_connection(('198.51.100.1', 80), timeout=2)"
    r = run_python(code, isolation=isolation, timeout=10)
    assert not r.ok
    assert "unreachable" in r.stderr or "halted" in r.stderr


def test_doctest_check_passes_reference_and_fails_wrong_body():
    from llmbook.data import load_corpus
    from llmbook.data.corpus import STDLIB_MODULES

    tasks = doctest_tasks(load_corpus("source", min_chars=0), STDLIB_MODULES)
    task = next(t for t in tasks if t.name == "decode_long")
    good = run_python(doctest_check(task, task.body), timeout=10)
    assert good.ok and '"failed": 0' in good.stdout and '"attempted": 7' in good.stdout
    bad = run_python(doctest_check(task, "    return 0"), timeout=10)
    assert '"failed": 6' in bad.stdout  # decode_long(b"") == 0 still passes
    loop = run_python(doctest_check(task, "    while True: pass"), timeout=2)
    assert loop.timed_out


def test_expression_check_and_verify_exercise():
    assert expression_check("__import__('os').system('ls')") is None
    assert expression_check("().__class__") is None
    assert expression_check("open('/etc/passwd').read()") is None
    assert expression_check("def f(): pass") is None
    script = expression_check("sorted({3, 1, 2})[::-1]")
    assert run_python(script).stdout == "[3, 2, 1]\n"
    rng = random.Random(6)
    words = ["".join(rng.choices("abcxyz", k=4)) for _ in range(3)]
    expr = f"'{','.join(words)}'.split(',')[{rng.randint(0, 2)}].upper()"
    assert verify_exercise(expr) == ("valid", repr(eval(expr)))
    assert verify_exercise("s.split(',')") == ("error", None)  # NameError
    assert verify_exercise("sorted(x, ") == ("not an expression", None)
    assert verify_exercise("().__class__") == ("refused", None)
    assert verify_exercise("'ab' * 50") == ("answer too long", None)
    assert verify_exercise("sum(range(10**12))", timeout=1)[0] == "error"  # timeout


# --- measures of code completion ------------------------------------------------------


def lcs_table(a, b):
    """The textbook dynamic programme, as a reference for the bit-parallel LCS."""
    row = [0] * (len(b) + 1)
    for x in a:
        new = [0]
        for j, y in enumerate(b):
            new.append(row[j] + 1 if x == y else max(row[j + 1], new[j]))
        row = new
    return row[-1]


def test_lcs_and_edit_similarity_equal_dp_and_rapidfuzz():
    from rapidfuzz import fuzz

    rng = random.Random(11)
    for _ in range(300):
        alphabet = rng.choice(["ab", "abc", string.ascii_letters + " ._()"])
        a = "".join(rng.choices(alphabet, k=rng.randint(0, 90)))
        b = "".join(rng.choices(alphabet, k=rng.randint(0, 90)))
        assert lcs_length(a, b) == lcs_table(a, b)
        assert edit_similarity(a, b) == pytest.approx(fuzz.ratio(a, b), abs=1e-9)
    assert lcs_length("x" * 200, "y" + "x" * 150) == 150  # past one machine word
    assert edit_similarity("state", "taste") == 80.0  # "tate": 100 * 2 * 4 / 10
    assert edit_similarity("return x", "return x") == 100.0
    assert edit_similarity("", "") == 100.0 and edit_similarity("abc", "") == 0.0
    assert edit_similarity("ab", "ba") == 50.0  # a swap: one deletion, one insertion


def test_identifiers_skip_keywords_strings_comments_and_numbers():
    line = "    if self.x1 is None and 1e5 > 0x1f: return _  # not this"
    assert identifiers(line) == [(7, "self"), (12, "x1"), (46, "_")]
    line = "out = f\"{name} is {len(s)}\" + rb'\\'q' + ñame"
    assert identifiers(line) == [(0, "out"), (40, "ñame")]
    assert identifiers('doc = """starts a string that goes on') == [(0, "doc")]
    assert identifiers("t = 'it\\'s' + u.match") == [(0, "t"), (14, "u"), (16, "match")]
    assert identifiers("        return None") == []
    assert [n for _, n in identifiers("bar = rb; elif'x': fr")] == ["bar", "rb", "fr"]


def test_identifier_prompts_end_before_whitespace():
    prompts = identifier_prompts("def f(a):", "    x = a.y + 2")
    assert prompts == [
        ("def f(a):", "\n    x"),
        ("def f(a):\n    x =", " a"),
        ("def f(a):\n    x = a.", "y"),
    ]


def test_completes_identifier_reads_only_what_it_needs():
    vocab = {1: " na", 2: "me", 3: "(", 4: "s", 5: " name", 6: "x", 9: "<eos>"}

    def decode(ids):
        return "".join(vocab[i] for i in ids)

    def tokens(*ids):  # fails if read past the given tokens
        yield from ids
        raise AssertionError("read too far")

    assert completes_identifier(tokens(1, 2, 3), decode, " name")
    assert not completes_identifier(tokens(5, 4), decode, " name")  # " names"
    assert completes_identifier(tokens(1, 2, 9), decode, " name", [9])  # then end
    assert not completes_identifier(tokens(6), decode, " name")  # wrong at once
    assert not completes_identifier(iter([1, 2]), decode, " name")  # ran out


def oracle(text, tokenizer):
    """A rule that always predicts the next token of `text` (given a prefix of it)."""

    def next_token(ids):
        done = tokenizer.decode(list(ids))
        assert text.startswith(done)
        return tokenizer.encode(text[len(done) :])[0]

    return next_token


def held_items(n, seed):
    from llmbook.data import load_corpus
    from llmbook.data.corpus import STDLIB_MODULES

    return next_line_items(load_corpus("source", min_chars=0)[:8], STDLIB_MODULES[:8],
                           n, seed)  # fmt: skip


def test_score_item_perfect_and_constant_predictors(tokenizer):
    enc, dec = tokenizer.encode, tokenizer.decode
    item = LineItem("m", "def f(a):", "    return a + a")
    a_id = enc(" a")[0]
    per = score_item(
        item,
        {"perfect": Completer.rule(oracle("def f(a):\n    return a + a\n    x", tokenizer)),
         "constant": Completer.rule(lambda ids: a_id)},
        enc, dec,
    )  # fmt: skip
    perfect, constant = per["perfect"], per["constant"]
    assert perfect == LineScores("return a + a", True, 100.0, 4, 4, 2, 2)
    # " a" forever: no line break, so no line; right at both " a" tokens of
    # "\n   | return| a| +| a" (the line break is not counted); " a a" completes both
    assert constant == LineScores("", False, 0.0, 2, 4, 2, 2)
    assert item_measures(constant) == {
        "exact match": 0.0, "edit similarity": 0.0,
        "next-token accuracy": 50.0, "identifier accuracy": 100.0,
    }  # fmt: skip
    for item in held_items(6, seed=4):  # real lines: the oracle scores 100 everywhere
        text = item.context + "\n" + item.target + "\n    x"
        o = {"o": Completer.rule(oracle(text, tokenizer))}
        s = score_item(item, o, enc, dec, max_new_tokens=128)
        m = item_measures(s["o"])
        assert s["o"].exact and s["o"].tokens >= 1
        assert m["edit similarity"] == m["next-token accuracy"] == 100.0
        assert m["identifier accuracy"] == 100.0 or s["o"].identifiers == 0


def test_gpt_next_tokens_equal_argmax_position_by_position(tokenizer):
    from llmbook.model import from_pretrained

    gpt = from_pretrained("course-gpt").eval()
    for item in held_items(3, seed=5):
        ids, start = line_tokens(item.context, item.target, tokenizer.encode)
        assert ids[:start] == tokenizer.encode(item.context)[:start]
        assert tokenizer.decode(ids[start:]).endswith(item.target)
        first = max(0, len(ids) - 1 - 128)  # the one window that the pass reads
        with torch.no_grad():
            brute = [int(gpt(torch.tensor([ids[first:p]]))[0, -1].argmax())
                     for p in range(start, len(ids))]  # fmt: skip
        assert gpt_next_tokens(gpt, ids, start) == brute
    with pytest.raises(ValueError, match="no context"):
        gpt_next_tokens(gpt, list(range(300)), 100)
    with pytest.raises(ValueError, match="start"):
        gpt_next_tokens(gpt, [1, 2, 3], 0)


def test_paired_measures_pair_items():
    def scores(exact, sim, right, names):  # names right of 2; None: no identifiers
        return LineScores(
            "", exact, sim, right, 4, names or 0, 0 if names is None else 2
        )

    per = [
        {"a": scores(True, 90.0, 4, 2), "b": scores(False, 50.0, 1, 0)},
        {"a": scores(False, 40.0, 2, None), "b": scores(False, 40.0, 2, None)},
        {"a": scores(False, 70.0, 3, 1), "b": scores(True, 100.0, 0, 1)},
    ]
    out = paired_measures(per, "a", "b", n_resamples=500, seed=1)
    assert list(out) == list(MEASURES)
    mean_a, mean_b, diff = out["edit similarity"]
    assert (mean_a, mean_b) == (pytest.approx(200 / 3), pytest.approx(190 / 3))
    assert diff.difference == pytest.approx(10 / 3) and diff.low <= diff.high
    assert out["next-token accuracy"][2].difference == pytest.approx(100 * 6 / 12)
    a, b, d = out["identifier accuracy"]  # over the 2 items with identifiers
    assert (a, b, d.difference) == (75.0, 25.0, 50.0)
    with pytest.raises(ValueError, match="no items"):
        paired_measures([], "a", "b")
