"""The trusted half: scores exported data, in a process that never ran student code.

A test passes when, for every assert the reference solution reached,

1. the student's run reached it too, with no error before the test ended;
2. the assert's condition, evaluated here with the leaf values substituted
   (`llmbook.grading.probes.trusted_eval`), is true: the comparison itself
   (``torch.allclose``, ``==``) is this process's, which no student code has patched.
   For a test the lab build could slice (`llmbook.grading.slicing.plan_test`), only the
   leaves that depend on the student's objects come from the sandbox; the others (the
   test's expected values) are the reference run's, stored in the zip, and were never
   computed in the sandbox;
3. every leaf value equals the reference solution's at the same place, within
   rtol 1e-4 / atol 1e-5, except leaves the lab declares free because correct
   answers differ there (random draws; see `llmbook.grading.labs`). A free leaf is
   a tensor the student's code returned, never a statistic of it
   (`llmbook.grading.reference.check_free` refuses others when the lab is built), so
   the assert's statistics of it (its std, its bound, its quantiles against a
   library's draw from the reference run) are computed here, on the exported values.

Messages (`TestResult.message`) are the grader's own: an assert's message rendered
from its source (`llmbook.grading.probes.message_text`), or "raised ValueError" for
a test that raised; nothing the sandbox says reaches the student's feedback.

Each question scores ``points * passed / tests``, clamped to ``[0, points]``.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass, field
from typing import Any

from llmbook.grading import codec, labs, probes
from llmbook.grading.bundle import Bundle

__all__ = [
    "QuestionResult",
    "TestResult",
    "decode_leaves",
    "score_question",
    "score_test",
]


@dataclass
class TestResult:
    name: str
    hidden: bool
    passed: bool
    message: str = ""


@dataclass
class QuestionResult:
    name: str
    points: float
    score: float = 0.0
    tests: list[TestResult] = field(default_factory=list)
    note: str = ""  # why it was not scored at all (not reached, ...)


_MISSING = codec.Opaque("no value exported")


def decode_leaves(entry: dict[str, Any], store: codec.TensorStore) -> dict[str, Any]:
    raw = entry.get("leaves")
    if not isinstance(raw, dict):
        return {}
    values: dict[str, Any] = {}
    for path, data in raw.items():
        if not isinstance(path, str):
            continue
        if isinstance(data, dict) and set(data) == {"same"}:
            continue
        values[path] = codec.decode(data, store)
    for path, data in raw.items():
        if isinstance(data, dict) and set(data) == {"same"}:
            values[path] = values.get(str(data["same"]), _MISSING)
    return values


def _by_assert(record: dict[str, Any] | None) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    if not isinstance(record, dict) or not isinstance(record.get("asserts"), list):
        return grouped
    for entry in record["asserts"]:
        if isinstance(entry, dict) and isinstance(entry.get("a"), int):
            grouped.setdefault(entry["a"], []).append(entry)
    return grouped


def score_test(
    bundle: Bundle,
    test: probes.TestDef,
    record: dict[str, Any] | None,
    store: codec.TensorStore,
) -> TestResult:
    """Judge one test from the student's exported `record` (None: never ran)."""
    result = TestResult(test.name, test.hidden, passed=False)
    if not isinstance(record, dict):
        result.message = "the test did not run"
        return result
    if record.get("error"):
        kind = record.get("error_type")
        known = isinstance(kind, str) and isinstance(
            getattr(builtins, kind, None), type
        )
        result.message = f"raised {kind}" if known else "raised an exception"
        return result
    sites = bundle.sites[test.name]
    reference = bundle.reference.get(test.name, {})
    expected = _by_assert(reference)
    refs = reference.get("refs", {})
    got = _by_assert(record)
    free = labs.free_leaves(bundle.lab, test.name)
    paths = bundle.leaf_paths(test.name)
    plan = bundle.plans.get(test.name)
    from_sandbox = plan.leaves if plan is not None and plan.sliced else None
    for index in sorted(expected):
        if index not in got:
            site = sites[index]
            result.message = f"the assert on line {site.line} was never reached"
            return result
    for index, executions in sorted(got.items()):
        if len(executions) > max(1000, 10 * len(expected.get(index, []))):
            result.message = "malformed export (too many records)"
            return result
        if not 0 <= index < len(sites):
            result.message = "malformed export"
            return result
        site = sites[index]
        for k, entry in enumerate(executions):
            message = site.text or f"the assert on line {site.line} failed"
            if site.fail:
                result.message = message
                return result
            if index not in paths:
                result.message = f"the assert on line {site.line} cannot be checked"
                return result
            leaves = decode_leaves(entry, store)
            if from_sandbox is not None:  # the others: the reference run's values
                mine = from_sandbox.get(index, {})
                runs = expected.get(index, [])
                theirs = decode_leaves(runs[k], bundle.tensors) if k < len(runs) else {}
                leaves = {
                    p: leaves.get(p, _MISSING) if p in mine else theirs.get(p, _MISSING)
                    for p in paths[index]
                }
            else:
                leaves = {p: leaves.get(p, _MISSING) for p in paths[index]}
            try:
                ok = probes.trusted_eval(site.cond, leaves, refs, _MISSING)
            except Exception as exc:  # the student's values broke the condition
                ok, message = False, f"{message} ({type(exc).__name__})"
            if not ok:
                result.message = message
                return result
            reference_runs = expected.get(index, [])
            if k < len(reference_runs) and free != "*":
                wanted = decode_leaves(reference_runs[k], bundle.tensors)
                for path, value in wanted.items():
                    source = ast.unparse(probes.node_at(site.cond, path))
                    if source in free:
                        continue
                    if not codec.same_value(leaves.get(path, _MISSING), value):
                        result.message = (
                            f"{message} (`{source}` differs from the reference)"
                        )
                        return result
    result.passed = True
    return result


def score_question(
    bundle: Bundle,
    question: str,
    export: dict[str, Any] | None,
    store: codec.TensorStore | None,
) -> QuestionResult:
    """Score one question from its export (None: the run never got there)."""
    points = bundle.questions[question]
    result = QuestionResult(question, points)
    tests = bundle.tests[question]
    records: dict[str, Any] = {}
    if isinstance(export, dict) and isinstance(export.get("tests"), list):
        for record in export["tests"]:
            if isinstance(record, dict) and isinstance(record.get("name"), str):
                records.setdefault(record["name"], record)
    else:
        result.note = "not reached"
    store = store or codec.TensorStore()
    for test in tests:
        result.tests.append(score_test(bundle, test, records.get(test.name), store))
    passed = sum(t.passed for t in result.tests)
    score = points * passed / len(tests) if tests else 0.0
    result.score = round(min(max(score, 0.0), points), 4)
    return result
