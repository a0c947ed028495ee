"""The package's imports, computed from the source: no import cycle and no import that runs upward.

Every module under ``src/adaptlab`` is parsed with ``ast`` (nothing is imported, so this runs in a second) and
every import of an adaptlab module is an edge, wherever it is written: at module level, inside a function (a lazy
import only delays a dependency, it does not remove it: a cycle hidden in a function is still a cycle) and under
``if TYPE_CHECKING:``. Type-only imports are counted too: an annotation that names another module's class is a
dependency a reader has to follow, and leaving them out would make ``TYPE_CHECKING`` a place to hide a cycle.
``from package import name`` is an edge to ``package.name`` when that is a module, else to the package's
``__init__``. Two things are not edges: the parent packages that Python runs before a submodule (the
``__init__`` of ``adaptlab.rag`` when ``adaptlab.rag.index`` is imported; a package re-exporting its own modules
would otherwise be a cycle with each of them), and imports by name at run time (``importlib.import_module``: the
CLI's lazy groups and the facade's lazy names, each inside its own package).

Layers, lowest first, as the code uses them; a module may import from its own layer and the ones below, never
from a higher one. The unit is a top-level module or subpackage of ``adaptlab``; imports inside one unit are only
checked for cycles.

0. foundation, no model code: ``errors``, ``_io`` (atomic writes), ``_version``, ``params`` (parameter fields),
   ``runtime`` (device and precision), ``hub``, ``loopback`` (an app served in a background thread), ``measure``, ``metrics``, ``progress``, ``schemas`` (file
   schemas), ``artifacts`` (the artifact format: read, verify, seal), ``results`` (the typed manifest and job result), ``families`` (the registry of families: it
   names the modules of higher layers only as strings, resolved when used, as a plugin registry does).
1. data and models: ``data`` (files, loaders, splits, the Wikipedia corpus), ``models`` (names, loading,
   classifier and causal LM wrappers), ``model_card`` (describes a base model from ``models.registry``),
   ``sampling`` (generation options and few-shot files, read with ``data.files``).
2. what runs on a model: ``adapt`` (how a model's weights are adapted: freezing, PEFT configs), ``embeddings``,
   ``generation``, ``structured`` (grammar-constrained decoding), ``prompting``, ``training`` (the Lightning engine), ``jobs`` (the job runner and the artifact
   writer, which adds the model card).
3. the families: ``methods`` and ``runner`` (classification), ``merge``, ``sft``, ``rlhf``, ``rag`` and
   ``feedback`` (ranking projects; ``rlhf`` reads a project's pairs, so it shares their layer).
   ``export`` (a generator written as GGUF or an Ollama directory).
4. what combines families: ``config`` (run files name methods and SFT jobs), ``compare``, ``serve``.
5. the command line: ``cli``, ``__main__``.

``adaptlab/__init__.py`` is the public facade: it may import anything, and so no module imports it (the version
lives in ``_version``). A new top-level module or subpackage fails the layer test until it is given a layer here.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
FACADE = "adaptlab"
LAYERS = {
    **dict.fromkeys(("errors", "_io", "_version", "params", "runtime", "hub", "loopback", "measure", "metrics", "progress", "schemas",
                     "artifacts", "results", "families"), 0),
    **dict.fromkeys(("data", "models", "model_card", "sampling"), 1),
    **dict.fromkeys(("adapt", "embeddings", "generation", "structured", "prompting", "training", "jobs"), 2),
    **dict.fromkeys(("methods", "runner", "merge", "sft", "rlhf", "rag", "feedback", "export"), 3),
    **dict.fromkeys(("config", "compare", "serve"), 4),
    **dict.fromkeys(("cli", "__main__"), 5),
}


def module_files(root: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, whether it is a package's ``__init__``), for every module of adaptlab."""
    found = {}
    for path in sorted((root / "adaptlab").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """The absolute dotted names ``source`` imports, anywhere in it; ``from a import b`` gives ``a.b``, which is the
    module ``a.b`` if there is one and otherwise a name in ``a``."""
    names = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(modules: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """Module -> the adaptlab modules it imports: each name resolved to the longest module it starts with
    (``adaptlab.rag.RagIndex`` -> the package ``adaptlab.rag``; ``adaptlab.feedback.db`` -> that module)."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, (path, package) in modules.items():
        names = imported_names(path.read_text(encoding="utf-8"), module, package)
        targets = {resolve(name) for name in names if name == FACADE or name.startswith(FACADE + ".")}
        graph[module] = {target for target in targets if target is not None and target != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (its modules in import order, the first repeated at the end) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(graph, component) for component in components]


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & component):
            if target == start:
                return paths[node] + [start]
            if target not in paths:
                paths[target] = paths[node] + [target]
                queue.append(target)
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def unit(module: str) -> str:
    """The top-level module or subpackage of adaptlab a module belongs to (the facade for ``adaptlab`` itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FACADE


def upward_imports(graph: dict[str, set[str]], layers: dict[str, int] = LAYERS) -> list[str]:
    """Every import of a higher layer or of the facade; first, every unit that has no layer yet."""
    missing = sorted({unit(module) for module in graph} - set(layers) - {FACADE})
    if missing:
        return [f"adaptlab.{name} has no layer: add it to LAYERS (and to the list in the docstring)" for name in missing]
    problems = []
    for module, targets in sorted(graph.items()):
        if module == FACADE:
            continue
        for target in sorted(targets):
            here, there = unit(module), unit(target)
            if target == FACADE:
                problems.append(f"{module} imports the public facade 'adaptlab'; import the module that defines the name")
            elif here != there and layers[there] > layers[here]:
                problems.append(f"{module} (layer {layers[here]}) imports {target} (layer {layers[there]})")
    return problems


def test_the_package_has_no_import_cycle():
    found = cycles(import_graph(module_files()))
    assert not found, "import cycles (move what both sides need into a module below them):\n" + "\n".join(
        " -> ".join(cycle) for cycle in found)


def test_no_module_imports_from_a_higher_layer():
    problems = upward_imports(import_graph(module_files()))
    assert not problems, "imports that run upward (see the layers in this file's docstring):\n" + "\n".join(problems)


def test_the_graph_sees_lazy_type_only_and_relative_imports(tmp_path):
    """The checks above are only as good as the edges: imports inside functions and ``TYPE_CHECKING`` blocks, relative
    imports and ``from package import module`` are all found, a cycle through them is reported, and so are an
    upward import, an import of the facade and a unit with no layer."""
    package = tmp_path / "adaptlab"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "errors.py": "def fail():\n    from adaptlab.sub import low\n",
        "sub/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from adaptlab import errors\n",
        "sub/low.py": "from . import high\n",
        "sub/high.py": "import adaptlab.sub\nfrom adaptlab import VERSION\n",
    }
    for name, text in files.items():
        (package / name).write_text(textwrap.dedent(text), encoding="utf-8")
    graph = import_graph(module_files(tmp_path))
    assert graph == {"adaptlab": set(), "adaptlab.errors": {"adaptlab.sub.low"}, "adaptlab.sub": {"adaptlab.errors"},
                     "adaptlab.sub.low": {"adaptlab.sub.high"}, "adaptlab.sub.high": {"adaptlab.sub", "adaptlab"}}
    assert cycles(graph) == [["adaptlab.errors", "adaptlab.sub.low", "adaptlab.sub.high", "adaptlab.sub", "adaptlab.errors"]]
    assert upward_imports(graph) == ["adaptlab.sub has no layer: add it to LAYERS (and to the list in the docstring)"]
    assert upward_imports(graph, {"errors": 0, "sub": 1}) == [
        "adaptlab.errors (layer 0) imports adaptlab.sub.low (layer 1)",
        "adaptlab.sub.high imports the public facade 'adaptlab'; import the module that defines the name"]
