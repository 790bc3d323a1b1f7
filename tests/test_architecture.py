"""Dependency direction, checked on the source tree's syntax (STYLE.md rules 8, 10, 11).

Every ``import`` and ``from ... import`` in central/, workers/ and bench/ is read with
``ast`` (including imports inside functions), relative imports are resolved to absolute
module names, and each rule below lists every offending ``file:line: import`` at once.
Two checks also import packages in a fresh interpreter to catch what a rule on direct
imports cannot: a heavy dependency pulled in transitively.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("central", "workers", "bench")
STDLIB = frozenset(sys.stdlib_module_names)

# Standard-library modules the policy core must not touch: clocks, randomness, I/O,
# concurrency. Its time is an argument and its randomness is passed in.
POLICY_FORBIDDEN = frozenset(
    {
        "time",
        "random",
        "asyncio",
        "socket",
        "threading",
        "datetime",
        "os",
        "selectors",
        "subprocess",
        "multiprocessing",
    }
)
# The wire protocol never (un)pickles anything.
PROTOCOL_FORBIDDEN = frozenset({"pickle", "marshal", "shelve", "copyreg", "_pickle"})
HEAVY = frozenset({"torch", "grpc", "textual"})
# The policy's one import outside itself: wire conventions, pure standard library.
CONVENTIONS = "central.protocol.conventions"


def is_msgpack(top: str) -> bool:
    # msgpack's compiled extension brings its Cython runtime modules along
    return top in ("msgpack", "cython_runtime") or top.startswith("_cython_")


@dataclass(frozen=True)
class Import:
    path: str  # relative to the repository root, e.g. "central/policy/types.py"
    line: int
    module: str  # absolute dotted name, relative imports resolved

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    def under(self, package: str) -> bool:
        return self.module == package or self.module.startswith(package + ".")

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: import {self.module}"


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in_source(source: str, path: str, module: str, is_package: bool) -> list[Import]:
    """Every import in ``source`` (the text of ``module``), as absolute module names."""
    package = module if is_package else module.rpartition(".")[0]
    out: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            out.extend(Import(path, node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            out.append(Import(path, node.lineno, name))
    return out


def source_files(*under: str) -> list[Path]:
    return sorted(p.relative_to(ROOT) for d in under for p in (ROOT / d).rglob("*.py"))


@functools.cache
def imports_of(rel: Path) -> tuple[Import, ...]:
    return tuple(
        imports_in_source(
            (ROOT / rel).read_text(encoding="utf-8"),
            rel.as_posix(),
            module_name(rel),
            rel.name == "__init__.py",
        )
    )


def all_imports(*under: str) -> list[Import]:
    return [imp for rel in source_files(*under) for imp in imports_of(rel)]


def report(bad: list[str], rule: str) -> str:
    return f"{rule}; {len(bad)} violation(s):\n  " + "\n  ".join(bad)


# ------------------------------------------------------------- the checker itself


def test_checker_resolves_relative_and_nested_imports() -> None:
    src = (
        "import os, numpy.linalg as la\n"
        "from . import codec\n"
        "from .errors import X\n"
        "from ..policy.types import Request\n"
        "def f():\n"
        "    import torch\n"
    )
    got = [(i.line, i.module) for i in imports_in_source(src, "p.py", "central.protocol.arrays", False)]
    assert got == [
        (1, "os"),
        (1, "numpy.linalg"),
        (2, "central.protocol"),
        (3, "central.protocol.errors"),
        (4, "central.policy.types"),
        (6, "torch"),
    ]
    pkg = imports_in_source("from .codec import encode\n", "i.py", "central.protocol", True)
    assert [i.module for i in pkg] == ["central.protocol.codec"]


def test_tree_is_where_the_rules_expect_it() -> None:
    # guards against a vacuous pass after a move or rename
    assert len(source_files("central/policy")) >= 5
    assert (ROOT / "central/protocol/arrays.py").is_file()
    assert (ROOT / "workers/torch_executor.py").is_file()
    assert any(i.top == "torch" for i in all_imports("workers/models"))


# ------------------------------------------------------------------------- rules


def test_policy_imports_only_pure_standard_library() -> None:
    bad = []
    for imp in all_imports("central/policy"):
        if imp.under("central.policy") or imp.module == CONVENTIONS:
            continue
        if imp.top not in STDLIB:
            bad.append(f"{imp} (not the standard library)")
        elif imp.top in POLICY_FORBIDDEN:
            bad.append(f"{imp} (clocks, randomness, I/O and threads stay out of the policy)")
    assert not bad, report(
        bad, "central/policy may import only the standard library and the wire conventions"
    )


def test_the_conventions_are_pure_standard_library() -> None:
    bad = [
        str(imp)
        for imp in imports_of(Path("central/protocol/conventions.py"))
        if imp.top not in STDLIB or imp.top in POLICY_FORBIDDEN
    ]
    assert not bad, report(
        bad,
        "central/protocol/conventions.py (the policy's one import "
        "outside itself) imports only the pure standard library",
    )


# Which of Baton's own packages each layer may import (besides itself, the standard
# library and third-party packages); docs/architecture.md draws the same picture.
LAYERS = {
    "central.protocol": (),
    "central.plumbing": ("central.protocol",),
    "central.client": ("central.protocol", "central.plumbing.security"),
    "central.frontend": ("central.protocol", "central.plumbing"),
    "workers": ("central.protocol", "central.plumbing"),
    "central.runtime": ("central.protocol", "central.plumbing", "central.policy"),
    "central.dashboard": ("central.protocol", "central.plumbing", "central.client"),
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    own = ("central", "workers")
    allowed = (layer, *LAYERS[layer])
    bad = [
        f"{imp} ({layer} may import only {', '.join(allowed)})"
        for imp in all_imports(layer.replace(".", "/"))
        if imp.top in own
        and imp.module not in ("central", "workers")
        and not any(imp.under(a) for a in allowed)
    ]
    assert not bad, report(bad, f"{layer} imports only {', '.join(allowed)} of Baton")


def _import_graph() -> dict[str, set[str]]:
    """Module -> the Baton modules it imports (anywhere in its body), in central/ and
    workers/. A submodule importing its own package (``from . import x``) is not an
    edge: the package's ``__init__`` importing its submodules is how packages work."""
    mods = {module_name(p) for p in source_files("central", "workers")}

    def owner(m: str) -> str:
        while m and m not in mods:
            m = m.rpartition(".")[0]
        return m

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for imp in all_imports("central", "workers"):
        src, dst = module_name(Path(imp.path)), owner(imp.module)
        if dst and dst != src and not src.startswith(dst + "."):
            graph[src].add(dst)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_central_or_workers() -> None:
    graph = _import_graph()
    assert "central.frontend.kserve" in graph["central.frontend.server"]  # the graph is real
    cycles = _cycles(graph)
    assert not cycles, "import cycles (a module imported lazily still counts): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_protocol_imports_only_stdlib_msgpack_and_numpy_in_arrays() -> None:
    bad = []
    for imp in all_imports("central/protocol"):
        if imp.under("central.protocol"):
            continue
        if imp.top in PROTOCOL_FORBIDDEN:
            bad.append(f"{imp} (the protocol never pickles)")
        elif imp.top in STDLIB or imp.top == "msgpack":
            continue
        elif imp.top == "numpy":
            if imp.path != "central/protocol/arrays.py":
                bad.append(f"{imp} (numpy only in central/protocol/arrays.py)")
        else:
            bad.append(f"{imp} (not stdlib, msgpack or numpy)")
    assert not bad, report(bad, "central/protocol imports only stdlib, msgpack and numpy")


def test_client_never_imports_heavy_packages_or_other_tiers() -> None:
    banned = HEAVY | {"workers", "bench", "tests"}
    # grpc_client.py is the one exception: the gRPC transport, imported lazily by
    # Client("grpc://...") only (the run-time probe below checks that import stays lazy).
    bad = [
        f"{imp} (the SDK stays light)"
        for imp in all_imports("central/client")
        if imp.top in banned and not (imp.path == "central/client/grpc_client.py" and imp.top == "grpc")
    ]
    assert not bad, report(bad, "central/client imports no torch, grpc, textual, workers, bench")


def test_torch_lives_only_in_the_executor_and_model_zoo() -> None:
    bad = [
        str(imp)
        for imp in all_imports(*SOURCE_DIRS)
        if imp.top == "torch"
        and imp.path != "workers/torch_executor.py"
        and not imp.path.startswith("workers/models/")
    ]
    assert not bad, report(bad, "torch only in workers/torch_executor.py and workers/models/")


def test_nothing_in_central_or_workers_imports_bench_or_tests() -> None:
    bad = [str(imp) for imp in all_imports("central", "workers") if imp.top in ("bench", "tests")]
    assert not bad, report(bad, "central/ and workers/ never import bench or tests")


# ------------------------------------------------------- transitive, at run time

_PROBE = """
import sys
base = set(sys.modules)
import {package}
new = sorted(set(sys.modules) - base)
import json
print(json.dumps(new))
"""


@functools.cache
def loaded_by(package: str) -> frozenset[str]:
    """Top-level names of the modules ``import package`` loads in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(package=package)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"import {package} failed:\n{out.stderr}"
    return frozenset(m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_sdk_loads_no_heavy_package() -> None:
    bad = sorted(loaded_by("central.client") & (HEAVY | {"workers", "bench", "tests"}))
    assert not bad, f"`import central.client` loaded {bad} (transitively)"
    assert "zmq" in loaded_by("central.client")  # the probe does see third-party imports


def test_importing_the_policy_loads_only_the_standard_library() -> None:
    tops = loaded_by("central.policy") - {"central"}
    bad = sorted(m for m in tops if m not in STDLIB)
    assert "msgpack" not in tops  # importing the conventions does not load the codec
    assert not bad, f"`import central.policy` loaded non-stdlib modules {bad}"
    # (forbidden stdlib modules are checked on direct imports only: os and time are
    # loaded at interpreter start, and stdlib modules may import each other)


def test_importing_the_protocol_loads_only_msgpack_beside_the_standard_library() -> None:
    tops = loaded_by("central.protocol") - {"central"}
    bad = sorted(m for m in tops if m not in STDLIB and not is_msgpack(m))
    assert not bad, f"`import central.protocol` loaded {bad} (numpy belongs to arrays only)"
    assert not tops & PROTOCOL_FORBIDDEN, "`import central.protocol` loaded a pickler"


# ------------------------------------------------------------------- __all__


def _package_inits() -> list[Path]:
    inits = sorted(p.relative_to(ROOT) for p in (ROOT / "central").glob("*/__init__.py"))
    return [*inits, Path("workers/models/__init__.py")]


def _declared_all(rel: Path) -> ast.AST | None:
    tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"), filename=str(rel))
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else ([node.target] if isinstance(node, ast.AnnAssign) else [])
        )
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return node.value
    return None


@pytest.mark.parametrize("rel", _package_inits(), ids=lambda p: p.parent.as_posix())
def test_every_package_declares_all(rel: Path) -> None:
    value = _declared_all(rel)
    assert value is not None, f"{rel.as_posix()}: no module-level __all__"
    assert isinstance(value, (ast.List, ast.Tuple)), (
        f"{rel.as_posix()}: __all__ must be a literal list or tuple"
    )


@pytest.mark.parametrize(
    "rel",
    [p for p in _package_inits() if p.parts[0] == "central"],  # workers.models loads torch
    ids=lambda p: p.parent.as_posix(),
)
def test_every_name_in_all_exists(rel: Path) -> None:
    package = importlib.import_module(module_name(rel))
    names = list(package.__all__)
    missing = [n for n in names if not hasattr(package, n)]
    assert not missing, f"{rel.as_posix()}: __all__ names {missing}, which are not defined"
    dupes = sorted({n for n in names if names.count(n) > 1})
    assert not dupes, f"{rel.as_posix()}: __all__ lists {dupes} twice"


def test_every_source_directory_is_a_regular_package() -> None:
    missing = sorted(
        d.relative_to(ROOT).as_posix()
        for top in SOURCE_DIRS
        for d in [ROOT / top, *(ROOT / top).rglob("*")]
        if d.is_dir()
        and d.name != "__pycache__"
        and any(d.glob("*.py"))
        and not (d / "__init__.py").is_file()
    )
    assert not missing, f"directories with modules but no __init__.py: {missing}"
