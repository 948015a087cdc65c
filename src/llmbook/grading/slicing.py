"""What the sandbox runs of a test: its probes, sliced (decided when the lab is built).

A test's asserts are judged on the trusted side (:mod:`llmbook.grading.probes`); the
sandbox only has to compute the values they take from the student's code. So each test
is cut down, when the lab is built, to the statements those values depend on
(:func:`plan_test`): statements that only build expected values, draw seeded inputs or
compare are left to the trusted side, and the sandbox receives a :class:`Plan` (the
sliced source and, per assert, the leaves to export). A test that cannot be sliced
refuses the build (``llmbook.grading.reference``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from llmbook.grading.probes import RECORD, AssertRewriter, TestDef, node_at

__all__ = ["Plan", "plan_test"]


_RANDOM = re.compile(
    r"\b(rand\w*|normal_?|uniform_?|bernoulli|multinomial|\w*seed\w*|shuffle|"
    r"choice|choices|sample|Generator|get_rng_state|set_rng_state)\b"
)


def _ids(node: ast.AST | None) -> set[str]:
    if node is None:
        return set()
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _stored(node: ast.AST) -> set[str]:
    return {
        n.id
        for n in ast.walk(node)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }


def _modules(fn: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names}
    return names


def _site_of(stmt: ast.stmt) -> int | None:
    """The site index if `stmt` is an instrumented assert (``__llmbook_record__``)."""
    call = stmt.value if isinstance(stmt, (ast.Expr, ast.Return)) else None
    if (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == RECORD
        and isinstance(call.args[0], ast.Constant)
    ):
        return int(call.args[0].value)
    return None


class _Taint:
    """Which names hold what the student's code produced, or handed to it.

    Flow-sensitive, in statement order (loop bodies twice), never un-tainting.
    *Produced*: the student's objects (the test's parameters), what calling them
    returns, anything computed from those, and names assigned under a condition, loop
    or ``try`` that involves them. *Touched*: a value passed to a call that involves a
    produced name (the student's code may change it in place), or whose method is
    called with one (``ref.weight.copy_(mine.weight)``); what the test computes from a
    touched *input* is its own (an expected value), not the student's: in a sliced
    test every value is compared with the reference run's, so the reference run's
    expected value stands for it. But once a *stateful* value is touched (`mutable`,
    as the reference run saw it: a model, an optimizer, a tensor that requires grad,
    or a container of them), every stateful name becomes produced, since changing
    them is the student's job. Module names are never tainted.
    """

    def __init__(
        self, params: set[str], modules: set[str], mutable: set[str] = frozenset()
    ) -> None:
        self.names = set(params)  # produced
        self.touched: set[str] = set()
        self.modules = modules
        self.mutable = set(mutable)
        self.at_site: dict[int, tuple[set[str], set[str]]] = {}

    def hit(self, node: ast.AST | None) -> bool:
        return bool((_ids(node) - self.modules) & self.names)

    def add(self, names: set[str]) -> None:
        self.names |= names - self.modules

    def calls(self, node: ast.AST) -> None:
        for call in [n for n in ast.walk(node) if isinstance(n, ast.Call)]:
            if not self.hit(call):
                continue
            handed = set()
            for arg in [*call.args, *(k.value for k in call.keywords)]:
                handed |= _ids(arg) - self.modules
            self.touched |= handed
            if isinstance(call.func, ast.Attribute):  # x.copy_(student values)
                self.touched |= _ids(call.func.value) - self.modules - self.names
            if self.hit(call.func) and handed & self.mutable:
                # a model, an optimizer, a parameter handed to the student's code:
                # what it holds afterwards is the student's result; and anything
                # stateful may share objects with it (a list of the parameters)
                self.add(self.mutable)

    def block(self, body: list[ast.stmt], forced: bool = False) -> None:
        for stmt in body:
            self.stmt(stmt, forced)

    def stmt(self, stmt: ast.stmt, forced: bool) -> None:
        site = _site_of(stmt)
        if site is not None:
            produced, touched = self.at_site.setdefault(site, (set(), set()))
            produced |= self.names
            touched |= self.touched
            return
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return
        if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
            head = stmt.iter if isinstance(stmt, (ast.For, ast.AsyncFor)) else stmt.test
            for _ in range(2):
                self.calls(head)
                inner = forced or self.hit(head)
                if inner and isinstance(stmt, (ast.For, ast.AsyncFor)):
                    self.add(_ids(stmt.target))
                self.block(stmt.body, inner)
            self.block(stmt.orelse, inner)
            return
        if isinstance(stmt, ast.If):
            self.calls(stmt.test)
            inner = forced or self.hit(stmt.test)
            self.block(stmt.body, inner)
            self.block(stmt.orelse, inner)
            return
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                self.calls(item.context_expr)
                if (forced or self.hit(item.context_expr)) and item.optional_vars:
                    self.add(_ids(item.optional_vars))
            self.block(stmt.body, forced)
            return
        if isinstance(stmt, ast.Try):
            before = set(self.names)
            self.block(stmt.body, forced)
            inner = (
                forced or self.names != before or self.hit(ast.Module(stmt.body, []))
            )
            for handler in stmt.handlers:
                self.block(handler.body, inner)
            self.block(stmt.orelse, inner)
            self.block(stmt.finalbody, forced)
            if inner:
                for part in (*stmt.handlers, *stmt.orelse, *stmt.finalbody):
                    self.add(_stored(part))
            return
        self.calls(stmt)
        if forced or self.hit(stmt):
            self.add(_stored(stmt))
            if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = (
                    stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                )
                for target in targets:  # x[i] = ..., x.attr = ...: x changes
                    self.add(_ids(target))


def _constructs(stmt: ast.stmt) -> bool:
    """Whether `stmt` creates an object of a class (``nn.Linear(4, 2)``): kept in the
    sandbox, since a constructor may draw random numbers that later inputs depend on;
    creating it computes no expected value."""
    for call in [n for n in ast.walk(stmt) if isinstance(n, ast.Call)]:
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name[:1].isupper():
            return True
    return False


class _Slicer:
    """Keeps the statements the sandbox needs for the tainted leaves, drops the rest."""

    def __init__(self, taint: _Taint, needs: dict[int, set[str]], modules: set[str]):
        self.taint, self.needs, self.modules = taint, needs, modules
        self.needed: set[str] = set()

    def block(self, body: list[ast.stmt]) -> list[ast.stmt]:
        kept: list[ast.stmt] = []
        for stmt in reversed(body):
            new = self.stmt(stmt)
            if new is not None:
                kept.insert(0, new)
        return kept

    def use(self, node: ast.AST | None) -> None:
        self.needed |= _ids(node) - self.modules

    def stmt(self, stmt: ast.stmt) -> ast.stmt | None:
        site = _site_of(stmt)
        if site is not None:
            self.needed |= self.needs.get(site, set())
            return stmt
        if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal)):
            return stmt
        if isinstance(stmt, (ast.Pass, ast.Break, ast.Continue, ast.Return, ast.Raise)):
            self.use(stmt)
            return stmt
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if stmt.name in self.needed or any(
                _site_of(s) is not None
                for s in ast.walk(stmt)
                if isinstance(s, ast.stmt)
            ):
                self.use(stmt)
                return stmt
            return None
        if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
            body = stmt.body
            for _ in range(2):  # what the next iteration needs, this one must make
                body = self.block(stmt.body)
            orelse = self.block(stmt.orelse)
            head = stmt.iter if isinstance(stmt, (ast.For, ast.AsyncFor)) else stmt.test
            if not (body or orelse or self.taint.hit(head)):
                return None
            self.use(head)
            if isinstance(stmt, (ast.For, ast.AsyncFor)):
                self.use(stmt.target)
            stmt.body, stmt.orelse = body or [ast.Pass()], orelse
            return stmt
        if isinstance(stmt, ast.If):
            body, orelse = self.block(stmt.body), self.block(stmt.orelse)
            if not (body or orelse or self.taint.hit(stmt.test)):
                return None
            self.use(stmt.test)
            stmt.body, stmt.orelse = body or [ast.Pass()], orelse
            return stmt
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            body = self.block(stmt.body)
            if not body and not any(self.taint.hit(i.context_expr) for i in stmt.items):
                return None
            for item in stmt.items:
                self.use(item.context_expr)
                self.use(item.optional_vars)
            stmt.body = body or [ast.Pass()]
            return stmt
        if isinstance(stmt, ast.Try):
            finalbody = self.block(stmt.finalbody)
            orelse = self.block(stmt.orelse)
            handlers = []
            for handler in stmt.handlers:
                handler.body = self.block(handler.body) or [ast.Pass()]
                self.use(handler.type)
                handlers.append(handler)
            body = self.block(stmt.body)
            if not (body or orelse or finalbody):
                return None
            stmt.body, stmt.orelse, stmt.finalbody = (
                body or [ast.Pass()],
                orelse,
                finalbody,
            )
            stmt.handlers = handlers
            return stmt
        # a simple statement
        stored = _stored(stmt)
        if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            stored |= set().union(*(_ids(t) for t in targets))
        keep = (
            self._runs_student_code(stmt)
            or bool(stored & (self.needed | self.taint.names))
            or _RANDOM.search(ast.unparse(stmt)) is not None
            or _constructs(stmt)
            or (isinstance(stmt, ast.Expr) and self._mutates_needed(stmt))
            or (isinstance(stmt, ast.Expr) and not (_ids(stmt) - self.modules))
        )
        if not keep:
            return None
        self.use(stmt)
        return stmt

    def _runs_student_code(self, stmt: ast.stmt) -> bool:
        """Whether `stmt` calls the student's objects or one of their methods."""
        for call in [n for n in ast.walk(stmt) if isinstance(n, ast.Call)]:
            if self.taint.hit(call.func):
                return True
        for node in ast.walk(stmt):  # mine.weight.data = ..., del mine.x
            if isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(
                node.ctx, (ast.Store, ast.Del)
            ):
                if self.taint.hit(node.value):
                    return True
        return False

    def _mutates_needed(self, stmt: ast.Expr) -> bool:
        for call in [n for n in ast.walk(stmt) if isinstance(n, ast.Call)]:
            if (
                isinstance(call.func, ast.Attribute)
                and _ids(call.func.value) & self.needed
            ):
                return True
        return False


@dataclass
class Plan:
    """What the sandbox receives for one test, and which leaves it evaluates there."""

    source: str  # instrumented (asserts replaced by recorder calls), maybe sliced
    leaves: dict[int, dict[str, str]]  # assert -> path -> the leaf's source
    sliced: bool


def plan_test(
    test: TestDef,
    paths: dict[int, list[str]],
    free: str | frozenset[str] = frozenset(),
    slice_it: bool = True,
    mutable: set[str] | frozenset[str] = frozenset(),
) -> Plan:
    """The sandbox's share of `test`, given the leaves the reference run found.

    Sliced: only the leaves that depend on the student's objects are evaluated in the
    sandbox, and only the statements needed for them run there; the test's own
    expected values, its conditions and messages never enter it (the trusted side
    takes the other leaves from the reference run). Unsliced (``slice_it=False``, or
    a whole test declared free, which the lab build refuses): the whole test, every
    leaf.
    """
    tree = ast.parse(test.source)
    fn = tree.body[0]
    rewriter = AssertRewriter()
    tree = ast.fix_missing_locations(rewriter.visit(tree))
    fn = tree.body[0]
    sites = rewriter.sites
    all_leaves = {
        a: {p: ast.unparse(node_at(sites[a].cond, p)) for p in ps}
        for a, ps in paths.items()
        if a < len(sites)
    }
    if not slice_it or free == "*" or not isinstance(fn, ast.FunctionDef):
        return Plan(ast.unparse(tree), all_leaves, sliced=False)
    modules = _modules(fn)
    taint = _Taint({a.arg for a in fn.args.args}, modules, set(mutable))
    taint.block(fn.body)
    nested = {
        _site_of(s)
        for node in ast.walk(fn)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        and node is not fn
        for s in ast.walk(node)
        if isinstance(s, ast.stmt) and _site_of(s) is not None
    }
    leaves: dict[int, dict[str, str]] = {}
    needs: dict[int, set[str]] = {}
    for a, by_path in all_leaves.items():
        produced, touched = taint.at_site.get(a, (set(taint.names), set()))
        chosen = {}
        for p, src in by_path.items():
            names = _ids(node_at(sites[a].cond, p)) - modules
            if (
                a in nested
                or src in free
                or names & produced
                or (names and names <= touched | produced)
            ):
                chosen[p] = src
        leaves[a] = chosen
        needs[a] = set().union(*(_ids(node_at(sites[a].cond, p)) for p in chosen))
    fn.body = _Slicer(taint, needs, modules).block(fn.body) or [ast.Pass()]
    return Plan(ast.unparse(ast.fix_missing_locations(tree)), leaves, sliced=True)
