"""Build time: run a lab's reference solution and store what its tests observed.

``add_reference`` runs the tests on the master notebook's solution (unsandboxed: the
master is the instructor's own), stores each assert's observed values in the
autograder zip, checks that the solution passes every test when checked from those
data, refuses free leaves the sandbox could fabricate (``check_free``), and slices
each test for the sandbox (``slicing.plan_test``), keeping only the slices the solution
still passes. ``tools/build_labs.py`` calls it; grading never does. It sits above
`bundle`, `runner` and `scoring`, which never import it.
"""

from __future__ import annotations

import ast
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from llmbook.grading import codec, labs, notebook, probes, runner, scoring, slicing
from llmbook.grading.bundle import (
    NEEDS_JSON,
    REFERENCE_JSON,
    REFERENCE_TENSORS,
    Bundle,
    load_bundle,
)
from llmbook.grading.harness import strip_ipython

__all__ = ["add_reference", "check_free", "imported_modules"]


def add_reference(zip_path: Path, master: Path, timeout: float = 900.0) -> Bundle:
    """Run the tests on `master`'s solution and store what they observed in the zip.

    Raises RuntimeError, naming the test, if the solution fails a test here (a test
    that cannot be checked from data, or one that is not deterministic).
    """
    bundle = load_bundle(zip_path, require_reference=False)
    cells = notebook.master_cells(master)
    exports = runner.run_job(
        bundle, cells, None, mode="classify", unsafe=True, timeout=timeout
    )
    if exports.problem:
        raise RuntimeError(
            f"{master.name}: the reference run failed: {exports.problem}"
        )
    reference: dict[str, Any] = {}
    merged = codec.TensorStore()
    for question in bundle.questions:
        data = exports.questions.get(question)
        if data is None:
            raise RuntimeError(f"{master.name}: no reference values for {question}")
        for key, tensor in exports.stores[question].tensors.items():
            merged.tensors[f"{question}.{key}"] = tensor
        for record in data["tests"]:
            refs: dict[str, str] = {}
            mutable: set[str] = set()
            for entry in record["asserts"]:
                refs.update(entry.pop("refs", {}))
                mutable.update(entry.pop("mutable", []))
            _qualify(record["asserts"], question)  # tensor keys: per question file
            reference[record["name"]] = {
                "asserts": record["asserts"],
                "refs": refs,
                "mutable": sorted(mutable),
            }
    bundle.reference, bundle.tensors = reference, merged
    for tests in bundle.tests.values():
        for test in tests:
            result = scoring.score_test(bundle, test, reference.get(test.name), merged)
            if not result.passed:
                raise RuntimeError(
                    f"{master.name}: the solution fails {test.name} when checked from "
                    f"data: {result.message}"
                )
    bundle.needs = imported_modules(master, bundle)
    check_free(bundle)
    _plan(bundle, master, cells, timeout)
    with tempfile.TemporaryDirectory(prefix="llmbook-ref-") as tmp:
        tensors = Path(tmp, "reference.safetensors")
        merged.save(tensors)
        with zipfile.ZipFile(zip_path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(REFERENCE_JSON, json.dumps(reference, allow_nan=True))
            zf.writestr(NEEDS_JSON, json.dumps(bundle.needs))
            if tensors.is_file():
                zf.write(tensors, REFERENCE_TENSORS)
    return bundle


def imported_modules(master: Path, bundle: Bundle) -> list[str]:
    """Every module the master's code cells and the lab's tests import (sorted)."""
    import nbformat

    sources = [
        strip_ipython(c.source)
        for c in nbformat.read(master, as_version=4).cells
        if c.cell_type == "code"
    ]
    sources += [t.source for tests in bundle.tests.values() for t in tests]
    found: set[str] = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
    return sorted(found)


def check_free(bundle: Bundle) -> None:
    """Refuse free leaves (`llmbook.grading.labs.FREE`) the sandbox could fabricate.

    A free leaf is not compared with the reference, so only the assert judges it, on
    the trusted side. That is sound only when the leaf is what the student's code
    returned (a drawn tensor) and every statistic of it is taken here: so a whole test
    cannot be free (``"*"``: its asserts would judge values the sandbox reports, a
    taken-over harness reports what makes them true), and each free leaf must be a
    name or an attribute (``w``, ``layer.weight``) that is a leaf of the test and
    holds a tensor in the reference run, never a number or a flag the test computed
    in the sandbox (``std``, ``in_bound``). Raises RuntimeError naming the test.
    """
    import torch

    for tests in bundle.tests.values():
        for test in tests:
            free = labs.free_leaves(bundle.lab, test.name)
            if not free:
                continue
            if free == labs.ALL:
                raise RuntimeError(
                    f"{test.name}: a whole test cannot be free; free the values the "
                    "student's code returns instead, or make the test deterministic"
                )
            seen: dict[str, list[Any]] = {}
            sites = bundle.sites[test.name]
            for entry in bundle.reference[test.name]["asserts"]:
                cond = sites[int(entry["a"])].cond
                for path, value in scoring.decode_leaves(entry, bundle.tensors).items():
                    source = ast.unparse(probes.node_at(cond, path))
                    seen.setdefault(source, []).append(value)
            for source in sorted(free):
                node = ast.parse(source, mode="eval").body
                while isinstance(node, ast.Attribute):
                    node = node.value
                if not isinstance(node, ast.Name):
                    raise RuntimeError(
                        f"{test.name}: free leaf `{source}` is computed; free only "
                        "what the student's code returned (a name or an attribute)"
                    )
                if source not in seen:
                    raise RuntimeError(f"{test.name}: free leaf `{source}` is no leaf")
                if not all(isinstance(v, torch.Tensor) for v in seen[source]):
                    raise RuntimeError(
                        f"{test.name}: free leaf `{source}` is not a tensor in the "
                        "reference run: a number or a flag computed in the sandbox "
                        "can be forged; let the assert compute it from the tensor"
                    )


def _plan(bundle: Bundle, master: Path, cells, timeout) -> None:
    """Slice each test for the sandbox, keeping only slices the solution passes.

    Every test is planned (`slicing.plan_test`), then the solution is graded with the
    sliced probes. A test whose slice does not give the solution full marks (a
    dropped statement drew random numbers, say) would have to run whole in the
    sandbox, where a hijacked harness could report its expected values: the build
    refuses it instead (RuntimeError naming the tests).
    """

    def refuse(whole: list[str]) -> None:
        if whole:  # their expected values would be computed, and forgeable, there
            raise RuntimeError(
                f"{bundle.lab}: tests {sorted(whole)} cannot be sliced, so the sandbox "
                "would run them whole, expected values included; rewrite them so that "
                "their slice gives the reference solution full marks (see "
                "llmbook.grading.probes)"
            )

    plans, whole = {}, []
    for tests in bundle.tests.values():
        for t in tests:
            try:
                plans[t.name] = slicing.plan_test(
                    t,
                    bundle.leaf_paths(t.name),
                    labs.free_leaves(bundle.lab, t.name),
                    mutable=set(bundle.reference[t.name].get("mutable", [])),
                )
            except Exception:  # an unusual test the planner cannot slice
                whole.append(t.name)
                continue
            if not plans[t.name].sliced:
                whole.append(t.name)
    refuse(whole)
    bundle.__dict__["plans"] = plans
    exports = runner.run_job(
        bundle, cells, None, mode="grade", unsafe=True, timeout=timeout
    )
    for question, tests in bundle.tests.items():
        result = scoring.score_question(
            bundle,
            question,
            exports.questions.get(question),
            exports.stores.get(question),
        )
        whole += [
            test.name
            for test, outcome in zip(tests, result.tests, strict=True)
            if not outcome.passed
        ]
    refuse(whole)
    for name, plan in plans.items():
        bundle.reference[name]["plan"] = {
            "source": plan.source,
            "leaves": {str(a): v for a, v in plan.leaves.items()},
            "sliced": plan.sliced,
        }


def _qualify(value: Any, prefix: str) -> None:
    """Prefix every tensor key in an encoded value (in place) with `prefix`."""
    if isinstance(value, list):
        for item in value:
            _qualify(item, prefix)
    elif isinstance(value, dict):
        if "tensor" in value:
            value["tensor"] = f"{prefix}.{value['tensor']}"
            if value.get("grad"):
                value["grad"] = f"{prefix}.{value['grad']}"
            return
        for item in value.values():
            _qualify(item, prefix)
