"""The layering of docs/architecture.md, checked on the source: every neurosim module is
parsed with ``ast`` and every import is read, function-local imports included.

Layers, bottom to top (a module may import its own layer and the ones below):
kernels -> neurons / connectivity / network / engine / counting -> local_rule / io ->
training / ops -> experiments -> cli.  The rules checked here are the ones the code
keeps today; partial checks of the same kind also live in test_cli.py and test_ops.py.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "neurosim"

#: the imports allowed across a rule, each with its reason (module, imported module).
EXCEPTIONS = {
    # ops/runfile._training_data rebuilds a run file's training data with the trainer's
    # own code (function-local, so that `neurosim ops` does not load training/ otherwise)
    ("neurosim.ops.runfile", "neurosim.training.checkpoint"),
    ("neurosim.ops.runfile", "neurosim.training.spide"),
    ("neurosim.ops.runfile", "neurosim.training.trainer"),
}

#: import edges left out of the cycle check, each with its reason (to be removed, never
#: extended); none since issue 29 moved check_environment from config to _validate.
CYCLE_EXCEPTIONS = set()


def _module_name(path):
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path):
    return path.name == "__init__.py"


def imports_of(path, source=None):
    """The neurosim modules ``path`` imports (absolute names), at any depth of its AST."""
    name = _module_name(path)
    package = name if _is_package(path) else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text() if source is None else source)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "neurosim")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "neurosim":
                continue
            for a in node.names:      # `from . import x` may name a submodule
                sub = f"{mod}.{a.name}"
                out.add(sub if _exists(sub) else mod)
    out.discard(name)
    return out


def _exists(mod):
    p = ROOT.parent.joinpath(*mod.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def graph(sources=None):
    """module -> set of imported neurosim modules, over every module of the package;
    ``sources`` (module -> text) replaces files (the mutation checks below)."""
    sources = sources or {}
    g = {}
    for path in sorted(ROOT.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        name = _module_name(path)
        g[name] = imports_of(path, sources.get(name))
    return g


def _under(mod, *prefixes):
    return any(mod == f"neurosim.{p}" or mod.startswith(f"neurosim.{p}.") for p in prefixes)


def violations(g):
    """Every import against the layering rules, as 'importer -> imported (rule)'."""
    bad = []
    for m, deps in g.items():
        for d in sorted(deps):
            if (m, d) in EXCEPTIONS:
                continue
            if _under(m, "kernels") and not _under(d, "kernels", "config"):
                bad.append(f"{m} -> {d} (kernels/ imports only kernels/ and config)")
            if _under(m, "io") and _under(d, "engine", "training", "ops", "experiments",
                                          "simulate"):
                bad.append(f"{m} -> {d} (io/ runs nothing)")
            if _under(m, "ops") and _under(d, "training"):
                bad.append(f"{m} -> {d} (ops/ is below training/)")
            if not _under(m, "experiments", "cli", "cli_ops") and m != "neurosim" \
                    and _under(d, "experiments"):
                bad.append(f"{m} -> {d} (only the CLI is above experiments/)")
    return bad


def cycles(g):
    """The import cycles between neurosim modules (each as a list of modules), via the
    strongly connected components of the graph (package ``__init__`` re-exports count)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):            # Tarjan, iterative enough for ~150 modules
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def _package_edges_only(g):
    """The graph without the edges from a package's ``__init__`` to its own submodules
    and from a submodule to its own package's ``__init__`` helpers being loaded first:
    a package importing its submodules and a submodule importing a sibling through the
    package is how Python packages are built, not a layering cycle."""
    h = {}
    for m, deps in g.items():
        h[m] = {d for d in deps if not d.startswith(m + ".") and (m, d) not in CYCLE_EXCEPTIONS}
    return h


def test_the_layering_rules_hold():
    assert violations(graph()) == []


def test_no_import_cycle_between_neurosim_modules():
    assert cycles(_package_edges_only(graph())) == []


def test_the_exceptions_are_still_needed():
    """An exception listed but no longer used must go."""
    g = graph()
    assert all(d in g[m] for m, d in EXCEPTIONS | CYCLE_EXCEPTIONS)


@pytest.mark.parametrize("module, line, rule", [
    ("neurosim.kernels.layout", "from ..network import Network", "kernels/"),
    ("neurosim.io.runfile", "def f():\n    from ..engine import run_forward", "io/"),
    ("neurosim.ops.table", "def f():\n    from ..training import spide", "ops/"),
    ("neurosim.training.loop", "from ..experiments import sparsity", "experiments/"),
])
def test_mutation_each_rule_catches_a_bad_import(module, line, rule):
    """Mutation checks: one forbidden import added to a module (function-local ones too)
    is reported by its rule."""
    path = ROOT.parent.joinpath(*module.split(".")).with_suffix(".py")
    bad = violations(graph({module: path.read_text() + "\n" + line + "\n"}))
    assert len(bad) == 1 and rule in bad[0], bad


def test_mutation_a_cycle_is_caught():
    path = ROOT / "counting.py"
    src = path.read_text() + "\ndef f():\n    from .training import trainer\n"
    assert cycles(_package_edges_only(graph({"neurosim.counting": src}))) != []
