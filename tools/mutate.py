"""A small AST mutation tester for theory/, solvers/ and the verdict layer, verify/checks/ and
verify/checker/ (``make mutate``; not part of ``make test``).

Each mutant changes one thing in one module — an arithmetic operator (+ −, * /, ** → *), a
comparison (< ≤, > ≥, == !=, is / is not, in / not in), a numeric constant (n → n + 1: 0 → 1,
1 → 2, 2 → 3, the boundary off-by-one; a float x → x + 1 for 0, 1, 2, else 2x), a unary minus
dropped, and/or swapped, a returned value replaced by None, a numeric or boolean default argument
changed — and the fast tests must fail on it ("killed"). Docstrings, error messages (anything
inside ``raise``), f-strings and ``__all__`` are not mutated.

How it runs fast: one parent process imports NumPy, torch, the project and the test modules
once (a pytest collection pass), then forks a child per mutant. The child compiles the mutated
module and swaps the mutated functions' code objects into the existing function objects
(``f.__code__``, defaults, class attributes), so every ``from module import f`` elsewhere sees the
mutant, then runs pytest (``-x``, quickest first) on the module's tests: the fast tests and those marked
``mutation`` (every claim in full mode with its pinned plan: too long for ``make test``). A child whose tests fail, error or time out
(3× the unmutated run + 10 s) kills the mutant.

No fake kills. A mutant that cannot be loaded at all (its module raises on re-execution) counts
as killed only when the *unmutated* module reloads, by the same route, and passes the same tests:
each file's reload is tried once first (its "null mutant"), and a file whose unmutated reload
fails or fails its tests has every mutant reported as an error, not a kill. Re-executing a
module must not trip over its own import-time side effects: a claim module registers its claims
with ``verify.registry.claim``, which refuses a second registration of a name, so the claims of
the module being reloaded are unregistered first (the reload registers the mutated ones). The
reason a mutant did not load is kept in its status.

Usage::

    python tools/mutate.py theory                 # every module under theory/
    python tools/mutate.py theory/bounds.py --list
    python tools/mutate.py solvers --jobs 2 --out .mutation/solvers.json
    python tools/mutate.py verify/checks --sample 60     # a seeded estimate of the score
    python tools/mutate.py verify/checks --always-pass   # each claim's comparisons always pass

Survivors are printed with their location and change; the committed list of surviving mutants,
each with why it is equivalent (or what test would kill it), is tools/surviving_mutants.md.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: the fast tests each package's mutants are judged by (ordered: quickest and most specific first)
TESTS = {
    "theory": ["tests/test_theory_pinned.py", "tests/test_bounds_pinned.py", "tests/test_neumann.py",
               "tests/test_minres.py", "tests/test_theory.py", "tests/test_verdicts.py", "tests/test_maml.py",
               "tests/test_logistic.py", "tests/test_checks_core.py", "tests/test_first_order.py",
               "tests/test_corollary1.py", "tests/test_bad_input.py", "tests/test_metamorphic.py",
               "tests/test_backends.py", "tests/test_solvers.py", "tests/test_claims.py",
               "tests/test_batched.py", "tests/test_accurate.py", "tests/test_construction.py",
               "tests/test_table1.py", "tests/test_enclosures.py", "tests/test_scale_pinned.py",
               "tests/test_certificates_at_scale.py"],
    "solvers": ["tests/test_solvers_pinned.py", "tests/test_linear_solvers.py", "tests/test_solvers.py", "tests/test_batched.py", "tests/test_host_reads.py",
                "tests/test_bad_input.py", "tests/test_metamorphic.py",
                "tests/test_backends.py", "tests/test_first_order.py", "tests/test_maml.py",
                "tests/test_verdicts.py", "tests/test_checks_core.py", "tests/test_logistic.py",
                "tests/test_corollary1.py", "tests/test_bounds_pinned.py", "tests/test_claims.py",
                "tests/test_accurate.py", "tests/test_table1.py", "tests/test_scale_pinned.py",
                "tests/test_certificates_at_scale.py"],
    "verify/checks": ["tests/test_checks_pinned.py", "tests/test_neumann.py", "tests/test_minres.py",
                      "tests/test_teeth.py", "tests/test_table1.py",
                      "tests/test_checks_core.py", "tests/test_verdicts.py",
                      "tests/test_corollary1.py", "tests/test_first_order.py",
                      "tests/test_logistic.py", "tests/test_maml.py", "tests/test_memory.py",
                      "tests/test_assumption1.py", "tests/test_claims.py",
                      "tests/test_certificates_at_scale.py"],
    "verify/checker": ["tests/test_checker_pinned.py", "tests/test_calling_pinned.py",
                       "tests/test_checker_linear.py", "tests/test_checker.py",
                       "tests/test_checker_peers.py", "tests/test_faults.py"],
}


def tests_of(path: str):
    """The fast tests of the package ``path`` lies in: the longest key of TESTS that is a
    prefix of it (verify/checks/logistic.py -> 'verify/checks'); all tests otherwise."""
    parts = Path(path).parts
    for n in range(len(parts), 0, -1):
        key = "/".join(parts[:n])
        if key in TESTS:
            return [t for t in TESTS[key] if (ROOT / t).is_file()]
    return ["tests"]

ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
         ast.Pow: ast.Mult, ast.FloorDiv: ast.Div, ast.Mod: ast.Mult}
COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
           ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn,
           ast.NotIn: ast.In}
SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.FloorDiv: "//",
          ast.Mod: "%", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
          ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}


@dataclass
class Mutant:
    file: str
    line: int
    col: int
    kind: str
    change: str
    index: int | None   # the n-th mutation point of this file (stable for a given source)
    text: str = ""      # the source line (to find the mutant again after edits elsewhere)
    status: str = "pending"
    seconds: float = 0.0


def _new_number(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v + 1.0 if v in (0.0, 1.0, 2.0) else v * 2.0
    return None


class _Points(ast.NodeVisitor):
    """Collects mutation points (node id paths) in a stable order."""

    def __init__(self):
        self.points = []      # (node, kind, change, apply(node_copy) -> None)
        self._skip = 0

    def _visit_skipped(self, node):
        self._skip += 1
        self.generic_visit(node)
        self._skip -= 1

    visit_Raise = _visit_skipped
    visit_JoinedStr = _visit_skipped

    def visit_Assign(self, node):
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return
        self.generic_visit(node)

    def visit_Expr(self, node):
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return                      # docstrings and bare strings
        self.generic_visit(node)

    def add(self, node, kind, change, fn):
        if not self._skip:
            self.points.append((node, kind, change, fn))

    def _swap_operator(self, node, suffix=""):
        """a + b -> a - b and the like (``suffix`` '=' for augmented assignments: += -> -=)."""
        new = ARITH.get(type(node.op))
        if new is not None:
            self.add(node, "arithmetic", f"{SYMBOL[type(node.op)]}{suffix} -> {SYMBOL[new]}{suffix}",
                     lambda n, new=new: setattr(n, "op", new()))
        self.generic_visit(node)

    def visit_BinOp(self, node):
        self._swap_operator(node)

    def visit_AugAssign(self, node):
        self._swap_operator(node, "=")

    def visit_Compare(self, node):
        for i, op in enumerate(node.ops):
            new = COMPARE.get(type(op))
            if new is not None:
                def fn(n, i=i, new=new):
                    n.ops = list(n.ops)
                    n.ops[i] = new()
                self.add(node, "comparison", f"{SYMBOL[type(op)]} -> {SYMBOL[new]}", fn)
        self.generic_visit(node)

    def visit_Constant(self, node):
        new = _new_number(node.value)
        if new is not None:
            self.add(node, "constant", f"{node.value!r} -> {new!r}",
                     lambda n, new=new: setattr(n, "value", new))

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.USub):
            self.add(node, "unary", "-x -> x", None)       # replaced by its operand
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        self.add(node, "boolean", f"{type(node.op).__name__.lower()} -> {new.__name__.lower()}",
                 lambda n, new=new: setattr(n, "op", new()))
        self.generic_visit(node)

    def visit_Return(self, node):
        if node.value is not None and not (isinstance(node.value, ast.Constant)
                                           and node.value.value is None):
            self.add(node, "return", "return x -> return None",
                     lambda n: setattr(n, "value", ast.Constant(None)))
        self.generic_visit(node)

    def visit_arguments(self, node):
        for default in list(node.defaults) + [d for d in node.kw_defaults if d is not None]:
            if isinstance(default, ast.Constant):
                v = default.value
                if isinstance(v, bool):
                    self.add(default, "default", f"default {v!r} -> {not v!r}",
                             lambda n: setattr(n, "value", not n.value))
                elif _new_number(v) is not None:
                    self.add(default, "default", f"default {v!r} -> {_new_number(v)!r}",
                             lambda n: setattr(n, "value", _new_number(n.value)))
        # defaults are not visited again as constants
        for arg in node.args + node.kwonlyargs + node.posonlyargs:
            self.visit(arg)


def mutation_points(source: str):
    tree = ast.parse(source)
    visitor = _Points()
    visitor.visit(tree)
    return tree, visitor.points


def mutated_tree(source: str, index: int):
    """The module's AST with its index-th mutation applied (on a deep copy)."""
    tree, points = mutation_points(source)
    target = points[index][0]
    # locate the same node in a deep copy by walking both trees in the same order
    copy_tree = copy.deepcopy(tree)
    for a, b in zip(ast.walk(tree), ast.walk(copy_tree)):
        if a is target:
            node = b
            break
    _, kind, _, fn = points[index]
    if kind == "unary":
        class Strip(ast.NodeTransformer):
            def visit_UnaryOp(self, n):
                return n.operand if n is node else self.generic_visit(n)
        copy_tree = Strip().visit(copy_tree)
    else:
        fn(node)
    return ast.fix_missing_locations(copy_tree)


_SOURCES: dict = {}      # the sources as enumerated (forked children mutate these, not the disk)


def enumerate_mutants(paths):
    out = []
    for path in paths:
        rel = str(Path(path).resolve().relative_to(ROOT))
        source = Path(path).read_text(encoding="utf-8")
        _SOURCES[rel] = source
        lines = source.splitlines()
        _, points = mutation_points(source)
        for i, (node, kind, change, _) in enumerate(points):
            line = getattr(node, "lineno", 0)
            out.append(Mutant(rel, line, getattr(node, "col_offset", 0), kind, change, i,
                              lines[line - 1].strip() if line else ""))
    return out


def _module_name(rel: str) -> str:
    return rel[:-3].replace("/", ".").removesuffix(".__init__")


def _swap_in(module, namespace):
    """Make the live module behave as the mutated namespace: swap code objects into existing
    function objects (so imported references see the mutant), patch class attributes in place."""
    import types

    def patch_function(old, new):
        # a decorator's wrapper (functools.wraps: contextlib.contextmanager, ...) is library
        # code that closes over the decorated function: swapping the wrapper's code keeps the
        # old function in its closure, so the decorated function itself is patched
        inner_old, inner_new = getattr(old, "__wrapped__", None), getattr(new, "__wrapped__", None)
        if isinstance(inner_old, types.FunctionType) and isinstance(inner_new, types.FunctionType):
            patch_function(inner_old, inner_new)
        try:
            old.__code__ = new.__code__
        except ValueError:          # different closure layout: replace the attribute instead
            return False
        old.__defaults__, old.__kwdefaults__ = new.__defaults__, new.__kwdefaults__
        return True

    for name, new in namespace.items():
        old = module.__dict__.get(name)
        if isinstance(old, types.FunctionType) and isinstance(new, types.FunctionType):
            if patch_function(old, new):
                continue
        elif isinstance(old, type) and isinstance(new, type) and old.__module__ == module.__name__:
            for attr, val in new.__dict__.items():
                cur = old.__dict__.get(attr)
                if isinstance(cur, types.FunctionType) and isinstance(val, types.FunctionType):
                    if patch_function(cur, val):
                        continue
                if attr in ("__dict__", "__weakref__", "__doc__"):
                    continue
                try:
                    setattr(old, attr, val)
                except (AttributeError, TypeError):
                    pass
            continue
        module.__dict__[name] = new


def _forget_registrations(name: str) -> None:
    """Undo the import-time side effects of module ``name`` that a re-execution would repeat:
    the claims it registered (verify.registry refuses a name registered twice)."""
    registry = sys.modules.get("verify.registry")
    if registry is None:
        return
    for key, c in list(registry.CLAIMS.items()):
        if getattr(c.run, "__module__", None) == name:
            del registry.CLAIMS[key]


def _always_pass(name: str) -> None:
    """The claim ``name``'s comparisons made to always pass: every CheckResult that
    verify.checks._result.compare builds for that claim has ``passed = True``, wherever the
    check modules call it from."""
    import verify.checks  # noqa: F401  (every check module, so that every `compare` is bound)
    import verify.checks._result as result
    from verify.registry import all_claims

    original = result.compare
    registered = set(all_claims())

    def ours(claim):
        # a claim's results carry its name, or its name and a suffix that is no other claim's
        # (lemma1-logistic makes 'lemma1-logistic-fd' and 'lemma1-logistic-autograd')
        return claim == name or (claim.startswith(name + "-") and claim not in registered)

    def compare(claim, *args, **kwargs):
        out = original(claim, *args, **kwargs)
        if ours(claim):
            out.passed = True
        return out

    for module in list(sys.modules.values()):
        if getattr(module, "compare", None) is original:
            module.compare = compare


def always_pass_mutants():
    """One mutant per registered claim: its comparisons made to always pass (``kind``
    'always-pass'; the claim's name is in ``change``)."""
    from verify.registry import all_claims

    out = []
    for name, c in sorted(all_claims().items()):
        rel = str(Path(sys.modules[c.run.__module__].__file__).resolve().relative_to(ROOT))
        out.append(Mutant(rel, 0, 0, "always-pass", f"claim {name}: every comparison passes",
                          None, name))
    return out


def _load(mutant: Mutant) -> None:
    """Compile the mutant (``index`` None: the unmutated module) and swap it into the live
    module; raises whatever the re-execution raises. An 'always-pass' mutant wraps the claim's
    comparisons instead (:func:`_always_pass`)."""
    import importlib

    if mutant.kind == "always-pass":
        _always_pass(mutant.text)
        return

    source = _SOURCES.get(mutant.file) or (ROOT / mutant.file).read_text(encoding="utf-8")
    tree = ast.parse(source) if mutant.index is None else mutated_tree(source, mutant.index)
    code = compile(tree, str(ROOT / mutant.file), "exec")
    name = _module_name(mutant.file)
    module = importlib.import_module(name)
    namespace = {"__name__": name, "__file__": module.__file__,
                 "__package__": module.__package__, "__builtins__": __builtins__}
    _forget_registrations(name)
    exec(code, namespace)
    _swap_in(module, namespace)


def _run_tests(tests, quiet=True) -> int:
    import pytest

    args = ["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", "--no-header",
            "-W", "error", *tests]
    if quiet:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    return int(pytest.main(args))


def _prepare_parent(tests):
    """Import heavy libraries, the project and the test modules once (a collection pass)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import contextlib
    import io

    import pytest
    import torch

    torch.set_num_threads(1)
    with contextlib.redirect_stdout(io.StringIO()):
        pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *tests])


class _LineRecorder:
    """A pytest plugin: for each test, the (file, line) pairs of the target files it executes."""

    def __init__(self, files):
        self.files = {str(ROOT / f) for f in files}
        self.map: dict = {}
        self._hits = set()

    def _trace(self, frame, event, arg):
        if frame.f_code.co_filename not in self.files:
            return None
        self._hits.add((frame.f_code.co_filename, frame.f_lineno))
        return self._local

    def _local(self, frame, event, arg):
        if event == "line":
            self._hits.add((frame.f_code.co_filename, frame.f_lineno))
        return self._local

    def pytest_runtest_call(self, item):
        import threading

        self._hits = set()
        sys.settrace(self._trace)
        threading.settrace(self._trace)

    def pytest_runtest_teardown(self, item):
        import threading

        sys.settrace(None)
        threading.settrace(None)
        for f, line in self._hits:
            key = f"{Path(f).relative_to(ROOT)}:{line}"
            self.map.setdefault(key, []).append(item.nodeid)


def line_map(tests, files, path):
    """Run the tests once under a line tracer (in a child) and write {file:line: [test ids]}."""
    if path.exists():
        return json.loads(path.read_text())
    pid = os.fork()
    if pid == 0:
        import pytest

        rec = _LineRecorder(files)
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        pytest.main(["-q", "-p", "no:cacheprovider", "-m", "not slow", *tests], plugins=[rec])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec.map))
        os._exit(0)
    os.waitpid(pid, 0)
    return json.loads(path.read_text())


def tests_for(mutant, lines, scopes, tests, durations=None):
    """The test ids that execute any line of the function (or class) enclosing the mutant; all
    tests for module-level code. With ``durations`` ({test id: seconds}), quickest first: the
    first failing test ends a mutant's run (``-x``), so a kill costs the cheap tests only."""
    lo, hi = scopes.get((mutant.file, mutant.line), (None, None))
    if lo is None:
        return list(tests)
    ids = []
    for ln in range(lo, hi + 1):
        ids += lines.get(f"{mutant.file}:{ln}", [])
    ids = sorted(set(ids), key=ids.index)
    if durations:
        ids.sort(key=lambda t: durations.get(t, math.inf))
    return ids


def enclosing_scopes(files):
    """{(file, line): (first, last)} line range of the innermost def enclosing each line."""
    out = {}
    for path in files:
        rel = str(Path(path).resolve().relative_to(ROOT))
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for ln in range(node.lineno, node.end_lineno + 1):
                    cur = out.get((rel, ln))
                    if cur is None or cur[1] - cur[0] > node.end_lineno - node.lineno:
                        out[(rel, ln)] = (node.lineno, node.end_lineno)
    return out


def _run_forked(mutant, tests, timeout):
    start = time.perf_counter()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # child
        os.close(r)
        code = 3
        try:
            try:
                _load(mutant)
            except BaseException as exc:            # the mutant does not load: say why
                os.write(w, f"{type(exc).__name__}: {exc}"[:300].encode())
                code = 6
            else:
                code = _run_tests(tests)
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    deadline = start + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = os.waitstatus_to_exitcode(status)
            reason = b""
            while chunk := os.read(r, 4096):
                reason += chunk
            os.close(r)
            mutant.seconds = time.perf_counter() - start
            # pytest: 1 tests failed, 2 interrupted, 3 internal error; 6 the mutant did not load
            # (a kill only because its file's unmutated reload was shown to work first);
            # 4 (usage error, e.g. a test id not found) and 5 (no tests) are errors of the tool
            mutant.status = {0: "survived", 1: "killed", 3: "killed (internal error)",
                             6: f"killed (does not load: {reason.decode(errors='replace')})",
                             4: "error (pytest usage)",
                             5: "error (no tests)"}.get(rc, f"killed (exit {rc})")
            return mutant
        if time.perf_counter() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            mutant.seconds = time.perf_counter() - start
            mutant.status = "killed (timeout)"
            return mutant
        time.sleep(0.05)


def null_mutant(rel: str) -> Mutant:
    """The unmutated module as a 'mutant' (index None): reloaded exactly as a mutant is."""
    return Mutant(rel, 0, 0, "none", "unmutated reload", None)


def check_reloads(files, lines, scopes, tests, timeout) -> dict:
    """{file: None, or why its unmutated reload is not a valid baseline}: each file is reloaded
    unmutated by the mutants' own route and the tests that run any of its code are run on it;
    they must pass, or a kill of one of its mutants would say nothing about the mutant."""
    out = {}
    for path in files:
        rel = str(Path(path).resolve().relative_to(ROOT))
        ids = sorted({t for key, ts in lines.items() if key.rsplit(":", 1)[0] == rel for t in ts})
        m = _run_forked(null_mutant(rel), ids or list(tests), timeout)
        out[rel] = None if m.status == "survived" else m.status
        print(f"reload {rel}: {'ok' if out[rel] is None else out[rel]} ({m.seconds:.0f} s)",
              flush=True)
    return out


class _Durations:
    """A pytest plugin: each test's duration (call phase), by test id."""

    def __init__(self):
        self.seconds: dict = {}

    def pytest_runtest_logreport(self, report):
        if report.when == "call":
            self.seconds[report.nodeid] = report.duration


def _baseline(tests, durations_path=None) -> float:
    """Run the tests once, unmutated (they must pass); with ``durations_path``, write each
    test's duration there (the mutants run their tests quickest first)."""
    start = time.perf_counter()
    log = ROOT / ".mutation" / "baseline.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    pid = os.fork()
    if pid == 0:
        import pytest

        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        rec = _Durations()
        code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                                "-W", "error", *tests], plugins=[rec]))
        if durations_path is not None and code == 0:
            Path(durations_path).parent.mkdir(parents=True, exist_ok=True)
            Path(durations_path).write_text(json.dumps(rec.seconds))
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        raise SystemExit("the unmutated code fails its tests: fix that first (pytest's output: "
                         f"{log.relative_to(ROOT)}):\n" + "\n".join(tail))
    return time.perf_counter() - start


def _key(m) -> tuple:
    """What identifies a mutant across runs: file, source line text, kind, change (and the
    claim of an always-pass mutant)."""
    return (m["file"], m.get("text", ""), m["kind"], m["change"]) if isinstance(m, dict) else \
        (m.file, m.text, m.kind, m.change)


def _pinned() -> None:
    """Start again with the report's pinned numerical kernels (verify._numerics), as make mutate
    does: the tests compare claim plans made with them."""
    sys.path.insert(0, str(ROOT))
    from verify._numerics import exec_pinned, state

    if state() == "native" and os.name == "posix":
        exec_pinned([sys.executable, *sys.orig_argv[1:]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="packages or modules (theory, solvers, theory/bounds.py)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--tests", nargs="*", help="test files (default: the package's fast tests)")
    ap.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    ap.add_argument("--out", default=None, help="write every mutant's result as JSON here")
    ap.add_argument("--only", default=None, help="only mutants whose 'file:line' contains this")
    ap.add_argument("--sample", type=int, default=None,
                    help="a seeded random sample of this many mutants (an estimate of the score)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true",
                    help="keep the mutants already finished in OUT.partial.jsonl (written as "
                         "each mutant finishes) and run the others")
    ap.add_argument("--always-pass", action="store_true",
                    help="instead of operator mutants: one mutant per claim whose comparisons "
                         "always pass (every claim must have a test that then fails)")
    ap.add_argument("--no-reload-check", action="store_true",
                    help="skip the unmutated reload of each file (then a mutant that does not "
                         "load is reported as an error, never as a kill)")
    ap.add_argument("--rerun", default=None,
                    help="only the mutants that survived in this earlier --out JSON (matched by "
                         "file, source line and change, so edits elsewhere do not matter)")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    files = []
    for p in args.paths:
        path = ROOT / p
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    mutants = enumerate_mutants(files)
    if args.always_pass:
        mutants = always_pass_mutants()
    if args.only:
        mutants = [m for m in mutants if args.only in f"{m.file}:{m.line}"]
    if args.rerun:
        old = json.loads(Path(args.rerun).read_text())
        alive = [m for m in old if not m["status"].startswith("killed")]
        keys = {(m["file"], m["text"], m["kind"], m["change"]) for m in alive if m.get("text")}
        near = [(m["file"], m["line"], m["kind"], m["change"]) for m in alive if not m.get("text")]
        mutants = [m for m in mutants if (m.file, m.text, m.kind, m.change) in keys
                   or any(f == m.file and abs(ln - m.line) <= 3 and k == m.kind and c == m.change
                          for f, ln, k, c in near)]
    if args.sample is not None and args.sample < len(mutants):
        import random

        mutants = sorted(random.Random(args.seed).sample(mutants, args.sample),
                         key=lambda m: (m.file, m.index))
    if args.list:
        for m in mutants:
            print(f"{m.file}:{m.line}:{m.col} [{m.kind}] {m.change}")
        print(f"{len(mutants)} mutants")
        return 0
    tests = args.tests or tests_of(args.paths[0])
    print(f"{len(mutants)} mutants in {len(files)} files; tests: {' '.join(tests)}", flush=True)
    _prepare_parent(tests)
    import hashlib

    digest = hashlib.sha1("\0".join([*tests, *(Path(f).read_text(encoding="utf-8") for f in files),
                                      *(Path(t.split("::")[0]).read_text(encoding="utf-8")
                                        for t in tests if Path(t.split("::")[0]).is_file())]
                                     ).encode()).hexdigest()[:16]
    durations_path = ROOT / ".mutation" / f"durations-{digest}.json"
    base = _baseline(tests, durations_path)
    durations = json.loads(durations_path.read_text()) if durations_path.is_file() else None
    timeout = 3 * base + 10
    print(f"unmutated run {base:.1f} s; timeout per mutant {timeout:.0f} s", flush=True)
    cache = ROOT / ".mutation" / f"lines-{digest}.json"
    lines = {} if args.always_pass else line_map(
        tests, [Path(f).resolve().relative_to(ROOT) for f in files], cache)
    scopes = enclosing_scopes(files)
    print(f"line map: {len(lines)} lines covered", flush=True)
    mutated = sorted({m.file for m in mutants})
    reload_ok = ({} if args.no_reload_check or args.always_pass else
                 check_reloads([ROOT / f for f in mutated], lines, scopes, tests, timeout))
    finished, queue = [], []
    partial = Path(args.out + ".partial.jsonl") if args.out else None
    done = {}
    if partial is not None and args.resume and partial.is_file():
        for line in partial.read_text().splitlines():
            rec = json.loads(line)
            done[_key(rec)] = rec
    elif partial is not None and partial.exists():
        partial.unlink()
    for m in mutants:
        if _key(m) in done:
            rec = done.pop(_key(m))
            m.status, m.seconds = rec["status"], rec["seconds"]
            finished.append(m)
            continue
        if reload_ok.get(m.file) is not None:
            m.status = f"error (the unmutated module does not reload cleanly: {reload_ok[m.file]})"
            finished.append(m)
        else:
            queue.append(m)
    running = {}
    # up to --jobs children at a time
    while queue or running:
        while queue and len(running) < args.jobs:
            m = queue.pop(0)
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                selected = ((sorted(durations, key=durations.get) if durations else list(tests))
                            if m.kind == "always-pass"
                            else tests_for(m, lines, scopes, tests, durations))
                if not selected:
                    m.status = "survived (no test runs this code)"
                    res = m
                else:
                    res = _run_forked(m, selected, timeout)
                os.write(w, json.dumps(asdict(res)).encode())
                os._exit(0)
            os.close(w)
            running[pid] = r
        pid, _ = os.wait()
        r = running.pop(pid)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        res = Mutant(**json.loads(data))
        if args.no_reload_check and res.status.startswith("killed (does not load"):
            res.status = "error" + res.status[len("killed"):]
        finished.append(res)
        if partial is not None:
            partial.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("a") as fh:
                fh.write(json.dumps(asdict(res)) + "\n")
        mark = "." if res.status.startswith("killed") else "S"
        if res.status == "survived (no test runs this code)":
            print(f"\nUNCOVERED {res.file}:{res.line} [{res.kind}] {res.change}", flush=True)
            continue
        print(mark if mark == "." else f"\nSURVIVED {res.file}:{res.line} [{res.kind}] {res.change}",
              end="" if mark == "." else "\n", flush=True)
    errors = [m for m in finished if m.status.startswith("error")]
    for m in errors:
        print(f"ERROR {m.file}:{m.line} [{m.kind}] {m.change}: {m.status}")
    killed = sum(m.status.startswith("killed") for m in finished)
    no_load = sum(m.status.startswith("killed (does not load") for m in finished)
    print(f"\n{killed}/{len(finished)} killed ({100 * killed / max(len(finished), 1):.1f} %); "
          f"{no_load} of them do not load (their files reload unmutated); {len(errors)} errors "
          f"(counted as not killed)")
    by_file: dict = {}
    for m in finished:
        k, n = by_file.get(m.file, (0, 0))
        by_file[m.file] = (k + m.status.startswith("killed"), n + 1)
    for f, (k, n) in sorted(by_file.items()):
        print(f"  {f}: {k}/{n}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        finished.sort(key=lambda m: (m.file, m.index))
        Path(args.out).write_text(json.dumps([asdict(m) for m in finished], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    _pinned()
    sys.exit(main())
