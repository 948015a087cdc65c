"""Unit tests of llmbook.grading's parts: data codec, probes, integrity, inputs, CLI.

Fast and sandbox-free; the end-to-end attack suite is tests/unit/grading/test_grading_attacks.py.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from llmbook.grading import cli, codec, integrity, probes, report, sandbox, slicing
from llmbook.grading.harness import strip_ipython
from llmbook.grading.notebook import SubmissionError, read_submission


def roundtrip(value):
    store = codec.TensorStore()
    data = json.loads(codec.dumps(codec.encode(value, store)))
    return codec.decode(data, store)


def test_codec_roundtrips_data_and_keeps_grads():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    (w * 2).sum().backward()
    value = {
        ("a", "b"): [1, 2.5, math.inf, None, True],
        "t": (w, torch.Size([2, 3]), torch.int64),
        "c": Counter({("x",): 3}),
        "s": {1, 2},
    }
    back = roundtrip(value)
    assert back[("a", "b")] == [1, 2.5, math.inf, None, True]
    tensor, size, dtype = back["t"]
    assert isinstance(tensor, torch.nn.Parameter) and tensor.dtype == torch.float64
    assert torch.equal(tensor.detach(), w.detach()) and torch.equal(tensor.grad, w.grad)
    assert size == (2, 3) and dtype is torch.int64
    assert isinstance(back["c"], Counter) and back["c"][("y",)] == 0
    assert back["s"] == {1, 2}
    assert math.isnan(roundtrip(float("nan")))


def test_codec_turns_objects_into_opaque_values_that_never_compare_equal():
    back = roundtrip([torch.nn.Linear(2, 2), print])
    assert all(isinstance(v, codec.Opaque) for v in back)
    assert not codec.same_value(back[0], back[0])
    with pytest.raises(TypeError, match="not data"):
        bool(back[1])


def test_codec_rejects_malformed_input_without_running_it():
    store = codec.TensorStore()
    for bad in ({"tensor": "missing"}, {"evil": "__import__('os')"}, [1], {}):
        assert isinstance(codec.decode(bad, store), codec.Opaque)


def test_same_value_tolerances():
    a = torch.tensor([1.0, 2.0])
    assert codec.same_value(a + 1e-7, a)
    assert not codec.same_value(a + 1e-2, a)
    assert not codec.same_value(a.double(), a), "dtype must match"
    assert not codec.same_value(1, True) and codec.same_value(1.0, 1.0 + 1e-9)
    assert codec.same_value((1, "x"), (1, "x")) and not codec.same_value([1], (1,))


TEST_SOURCE = """
def test_example(f, Model):
    import torch
    x = torch.arange(4.0)
    y = f(x)
    assert torch.allclose(y, x * 2), f"got {y.tolist()}"
    m = Model()
    assert m.scale == 2 and isinstance(m(x), torch.Tensor)
    assert all(v >= 0 for v in y.tolist())
    try:
        f(None)
    except TypeError:
        pass
    else:
        raise AssertionError("f(None) must raise TypeError")
"""


class Model:
    scale = 2

    def __call__(self, x):
        return x * self.scale


def run_instrumented(source, f, record):
    code, sites = probes.instrument(source)
    env = {probes.RECORD: record, "__builtins__": __builtins__}
    exec(code, env)
    env["test_example"](f, Model)
    return sites


def test_probes_classify_then_check_on_the_trusted_side():
    found = []

    def record(index, env):
        fail = sites[index].fail
        found.append(
            (index, fail, None if fail else probes.classify(sites[index].cond, env))
        )

    code, sites = probes.instrument(TEST_SOURCE)
    env = {probes.RECORD: record, "__builtins__": __builtins__}
    exec(code, env)
    env["test_example"](lambda x: x * 2, Model)
    assert [s.fail for s in sites] == [False, False, False, True]
    assert [i for i, _, _ in found] == [0, 1, 2], "f(None) raised: no failure recorded"
    first = found[0][2]
    assert sorted(first.leaves) == ["args.0", "args.1/left"]  # y, and x of `x * 2`
    assert first.refs == {"torch": "module:torch"}
    second = found[1][2]  # m.scale and m(x): the student's object is evaluated inside
    assert sorted(
        ast.unparse(probes.node_at(sites[1].cond, p)) for p in second.leaves
    ) == [
        "m(x)",
        "m.scale",
    ]
    leaves = dict(first.leaves)
    assert probes.trusted_eval(sites[0].cond, leaves, first.refs, codec.Opaque("x"))
    leaves["args.0"] = torch.zeros(4)
    assert not probes.trusted_eval(sites[0].cond, leaves, first.refs, codec.Opaque("x"))


def test_trusted_eval_uses_the_graders_torch_even_if_the_sandbox_patched_it():
    cond = ast.parse("torch.allclose(a, b)", mode="eval").body
    leaves = {"args.0": torch.zeros(2), "args.1": torch.ones(2)}
    assert not probes.trusted_eval(cond, leaves, {"torch": "module:torch"}, None)
    with pytest.raises(ValueError, match="not an allowed module"):
        probes.trusted_eval(cond, leaves, {"torch": "module:os"}, None)


ORACLE_TEST = """
def test_scores(scores_fn):
    import torch
    torch.manual_seed(1)
    q = torch.randn(2, 3)
    k = torch.randn(4, 3)
    expected = q @ k.T / 3 ** 0.5
    theirs = torch.softmax(expected, dim=-1)
    before = q.clone()
    s = scores_fn(q, k)
    assert torch.allclose(s, expected), f"got {s.tolist()}, expected {expected.tolist()}"
    assert torch.equal(q, before), "do not change q in place"
    assert theirs.shape == (2, 4), "shape " + str(theirs.shape)
"""


def test_plan_slices_the_expected_values_out_of_the_sandbox():
    test = probes.parse_test_file(ORACLE_TEST, "q1")[0]
    sites = probes.instrument(test.source)[1]
    paths = {0: ["args.0", "args.1"], 1: ["args.0", "args.1"], 2: ["left/value"]}
    plan = slicing.plan_test(test, paths)
    assert plan.sliced
    # the student's output and the input it was handed are evaluated there ...
    assert plan.leaves == {0: {"args.0": "s"}, 1: {"args.0": "q"}, 2: {}}
    # ... the test's own expected values are neither computed nor named there
    assert "expected" not in plan.source and "softmax" not in plan.source
    assert "allclose" not in plan.source and "in place" not in plan.source
    assert (
        "torch.manual_seed(1)" in plan.source and "s = scores_fn(q, k)" in plan.source
    )
    whole = slicing.plan_test(test, paths, slice_it=False)
    assert not whole.sliced and "expected = " in whole.source
    assert set(whole.leaves[0].values()) == {"s", "expected"}
    # messages for the student come from the source, never from values
    assert sites[0].text == "got …, expected …"
    assert sites[1].text == "do not change q in place"
    assert sites[2].text == "shape …"


def test_parse_limits_give_clean_errors():
    with pytest.raises(codec.ParseLimit, match="nested too deeply"):
        codec.loads_limited("[" * 100_000 + "]" * 100_000, 10**6)
    with pytest.raises(codec.ParseLimit, match="too many digits"):
        codec.loads_limited("1" * 100_000, 10)
    with pytest.raises(codec.ParseLimit, match="more than 10 JSON objects"):
        codec.loads_limited("[" + "{}," * 20 + "{}]", 10)
    assert codec.loads_limited('{"a": [1, 2]}', 10) == {"a": [1, 2]}


def test_report_cleans_and_neutralises():
    assert report.clean("a\nb\x1b[31mc\u202ed") == "a b[31mcd"
    assert report.csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert report.csv_cell("-2+3") == "'-2+3" and report.csv_cell(-2.0) == -2.0
    assert report.csv_cell("@x") == "'@x" and report.csv_cell("+1") == "'+1"
    assert report.csv_cell("ok") == "ok"
    taken: set[str] = set()
    names = [
        report.feedback_name(n, taken)
        for n in ("a ref.ipynb", "a_ref.ipynb", "a_ref-2.ipynb", "=x.ipynb", ".ipynb")
    ]
    assert names[1] == "a_ref.txt" and names[2] == "a_ref-2.txt"
    assert names[0].startswith("a_ref-") and len(names[0]) == len("a_ref-") + 14
    assert names[3].startswith("x-") and names[4].startswith("notebook-")
    assert len(set(names)) == 5
    hashed = names[0][: -len(".txt")] + ".ipynb"  # a name shaped like a hashed one
    assert report.feedback_name(hashed, taken) != names[0]


def test_only_regular_files_are_read(tmp_path):
    import os

    os.mkfifo(tmp_path / "f.ipynb")
    (tmp_path / "l.ipynb").symlink_to("/dev/zero")
    with pytest.raises(SubmissionError, match="a FIFO"):
        read_submission(tmp_path / "f.ipynb")
    with pytest.raises(SubmissionError, match="a symbolic link"):
        read_submission(tmp_path / "l.ipynb")
    from llmbook.grading.notebook import sha256_file

    with pytest.raises(SubmissionError):
        sha256_file(tmp_path / "f.ipynb")


def test_strip_ipython_drops_magics_and_shell_lines():
    assert strip_ipython("%%time\nx = 1") == ""
    assert strip_ipython("%pip install x\nif True:\n    !ls\ny = 2") == (
        "pass\nif True:\n    pass\ny = 2"
    )


ANSWERS = [
    {
        "source": "from llmbook.utils import setup\nimport torch\nimport torch.nn.functional as F"
    },
    {"source": "def helper(s):\n    return F.softmax(s, dim=-1)\n"},
    {"source": "def stable_softmax(scores, mask=None):\n    return helper(scores)\n"},
    {
        "source": "from llmbook.attention import attention as ref\n"
        "def attention(q, k, v, mask=None):\n    return ref(q, k, v, mask)\n"
    },
    {"source": "def scaled_dot_scores(q, k):\n    return q @ k.transpose(-2, -1)\n"},
    {"source": "torch.allclose = lambda *a, **k: True\nimport gc"},
]


def test_integrity_flags_reference_and_forbidden_calls_per_question():
    questions = {
        "q1": ["scaled_dot_scores"],
        "q2": ["stable_softmax"],
        "q4": ["attention"],
    }
    flags = integrity.integrity_flags(ANSWERS, "lab02_attention", questions)
    assert "q2: calls softmax" in flags, "found through the helper it calls"
    assert "q4: uses llmbook (llmbook.attention.attention)" in flags
    assert not [f for f in flags if f.startswith("q1")]
    assert "notebook: replaces torch.allclose" in flags
    assert "notebook: imports gc" in flags
    assert not any("llmbook.utils" in f for f in flags), "the setup import is fine"


def test_integrity_flags_adam_only_from_the_library():
    cells = [
        {"source": "import torch\nclass Adam:\n    def step(self):\n        pass\n"},
        {"source": "class Adam2(torch.optim.Adam):\n    pass\nAdam = Adam2\n"},
    ]
    flags = integrity.integrity_flags(cells, "lab04_training", {"q1": ["Adam"]})
    assert flags == ["q1: calls Adam"]
    flags = integrity.integrity_flags(cells[:1], "lab04_training", {"q1": ["Adam"]})
    assert flags == []


def test_integrity_follows_globals_not_locals_of_the_same_name():
    """A parameter or local variable that shares its name with a top-level variable
    does not drag that variable into the answer; a real global use still counts,
    including one hidden behind a nested function's local of the same name."""
    setup = "from llmbook.model import load_tokenizer\neos_id = load_tokenizer().eos_token_id\n"
    cells = [
        {"source": setup},
        {"source": "def beam_search(model, idx, eos_id=None):\n    best = eos_id\n"
                   "    return [x for x in idx if x != best]\n"},
    ]  # fmt: skip
    assert (
        integrity.integrity_flags(cells, "lab05_decoding", {"q2": ["beam_search"]})
        == []
    )
    cheat = [
        {"source": setup},
        {"source": "def beam_search(model, idx):\n    def inner():\n        eos_id = 1\n"
                   "        return eos_id\n    return eos_id + inner()\n"},
    ]  # fmt: skip
    flags = integrity.integrity_flags(cheat, "lab05_decoding", {"q2": ["beam_search"]})
    assert flags == ["q2: uses llmbook (llmbook.model.load_tokenizer)"], flags
    default = [
        {"source": setup},
        {"source": "def beam_search(model, idx, stop=eos_id):\n    return stop\n"},
    ]  # fmt: skip
    assert integrity.integrity_flags(default, "lab05_decoding", {"q2": ["beam_search"]})


def test_integrity_flags_dynamic_code_and_hidden_definitions():
    cells = [
        {"source": "import torch\nif True:\n    def stable_softmax(s, mask=None):\n"
         "        return torch.softmax(s, -1)\n"},
        {"source": "import os\nfrom os import kill as k\nk(1, 9)\n"
         "exec('x = 1')\nf = getattr(torch, 'soft' + 'max')\nvars(torch)['x'] = 1\n"},
    ]  # fmt: skip
    flags = integrity.integrity_flags(
        cells, "lab02_attention", {"q2": ["stable_softmax"]}
    )
    for flag in (
        "q2: calls softmax",
        "notebook: calls os.kill (as k)",
        "notebook: calls exec",
        "notebook: calls getattr with a computed name",
        "notebook: calls vars",
    ):
        assert flag in flags, (flag, flags)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_submission_explains_what_is_wrong(tmp_path):
    with pytest.raises(SubmissionError, match="not valid JSON"):
        read_submission(write(tmp_path / "a.ipynb", "{"))
    with pytest.raises(SubmissionError, match="valid JSON, but an object without"):
        read_submission(write(tmp_path / "b.ipynb", '{"answers": 1}'))
    with pytest.raises(SubmissionError, match="valid JSON, but str without"):
        read_submission(write(tmp_path / "c.ipynb", '"hello"'))
    nb = {
        "cells": [
            {"cell_type": "code", "source": ['grader.check("q2")'], "metadata": {}},
            {"cell_type": "markdown", "source": "x", "metadata": {}},
            {
                "cell_type": "code",
                "source": "x = 1",
                "metadata": {"tags": ["otter_ignore"]},
            },
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    long = {
        **nb,
        "cells": [{"cell_type": "code", "source": "x" * 300_000, "metadata": {}}],
    }
    with pytest.raises(SubmissionError, match="cell 0 has 300,000 characters"):
        read_submission(write(tmp_path / "long.ipynb", json.dumps(long)))
    sub = read_submission(write(tmp_path / "d.ipynb", json.dumps(nb)))
    assert sub.lab is None and [c["index"] for c in sub.cells] == [0, 2]
    assert sub.cells[1]["skip"] and sub.anchors(["q1", "q2"]) == {"q1": None, "q2": 0}


def test_cli_refuses_without_a_sandbox_and_says_why(tmp_path, monkeypatch, capsys):
    def unavailable():
        raise sandbox.SandboxUnavailable("bubblewrap (bwrap) is not installed")

    monkeypatch.setattr(sandbox, "check_sandbox", unavailable)
    monkeypatch.setattr(
        "llmbook.grading.grade.bundles.load_bundle", lambda path: _FakeBundle()
    )
    (tmp_path / "subs").mkdir()
    write(tmp_path / "subs" / "x.ipynb", "{}")
    args = ["--autograder", "x.zip", "--submissions", str(tmp_path / "subs")]
    assert cli.main([*args, "--out", str(tmp_path / "g.csv")]) == 2
    err = capsys.readouterr().err
    assert "no sandbox: bubblewrap (bwrap) is not installed" in err
    assert "--unsafe-no-sandbox" in err and "your permissions" in err


class _FakeBundle:
    lab = "lab02_attention"
    questions = {"q1": 1.0}


def test_find_autograder_by_lab(tmp_path):
    (tmp_path / "lab02_attention.zip").write_bytes(b"")
    assert cli.find_autograder("lab02", tmp_path).name == "lab02_attention.zip"
    with pytest.raises(FileNotFoundError, match="no single autograder zip for lab09"):
        cli.find_autograder("lab09", tmp_path)


DRAW_TEST = """
def test_draw(sample):
    import torch
    w = sample(torch.zeros(100))
    std = w.std().item()
    assert abs(std - 1) < 0.1, "std 1"
    assert w.abs().max() <= 2, "bounded"
"""


def test_check_free_refuses_values_the_sandbox_could_fabricate(monkeypatch):
    """A free leaf must be a tensor the student's code returned (``w``): a whole test,
    a statistic computed in the sandbox (``std``), an expression or a typo is refused
    when the lab is built."""
    from types import SimpleNamespace

    from llmbook.grading import labs
    from llmbook.grading.reference import check_free

    test = probes.parse_test_file(DRAW_TEST, "q1")[0]
    sites = probes.instrument(test.source)[1]
    env = {"std": 1.0, "w": torch.ones(100), "abs": abs}
    store = codec.TensorStore()
    asserts = [
        {
            "a": site.index,
            "leaves": {
                path: codec.encode(value, store)
                for path, value in probes.classify(site.cond, env).leaves.items()
            },
        }
        for site in sites
    ]
    bundle = SimpleNamespace(
        lab="lab99_draws",
        tests={"q1": [test]},
        sites={test.name: sites},
        reference={test.name: {"asserts": asserts}},
        tensors=store,
    )
    for free, problem in [
        ("*", "a whole test cannot be free"),
        (frozenset({"std"}), "`std` is not a tensor"),
        (frozenset({"w.abs()"}), "`w.abs()` is computed"),
        (frozenset({"v"}), "`v` is no leaf"),
    ]:
        monkeypatch.setitem(labs.FREE, "lab99", {test.name: free})
        with pytest.raises(RuntimeError, match=re.escape(problem)):
            check_free(bundle)
    monkeypatch.setitem(labs.FREE, "lab99", {test.name: frozenset({"w"})})
    check_free(bundle)  # the drawn tensor itself: its statistics are taken here


def test_the_build_refuses_a_test_that_would_run_whole(monkeypatch):
    """A test whose slice cannot be made (or fails the reference solution) would run
    whole in the sandbox, expected values included: the lab build stops instead."""
    from types import SimpleNamespace

    from llmbook.grading import reference

    test = probes.parse_test_file(DRAW_TEST, "q1")[0]

    def unsliceable(*args, **kwargs):
        raise ValueError("no slice for this test")

    monkeypatch.setattr(slicing, "plan_test", unsliceable)
    bundle = SimpleNamespace(
        lab="lab99_draws",
        tests={"q1": [test]},
        reference={test.name: {}},
        leaf_paths=lambda name: [],
    )
    with pytest.raises(
        RuntimeError, match=re.escape(f"['{test.name}'] cannot be sliced")
    ):
        reference._plan(bundle, None, [], 10)
