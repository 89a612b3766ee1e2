"""The layers go one way: a module of garage/ imports only from layers below its own (or its own layer), no import
circle closes, and an import written inside a function says why (it keeps a heavy library out of start-up).

LAYERS is the one table; ARCHITECTURE.md shows the same layers in the same order (checked below).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. Layers on one row are siblings: they may not import each other.
LAYERS = [
    {"base": ("garage", "garage.errors", "garage.paths", "garage.files", "garage.counters", "garage.secrecy",
              "garage.config", "garage.catalog", "garage.offline_models", "garage.access")},
    {"device": ("garage.device",)},
    {"data": ("garage.data",)},
    {"models": ("garage.models",)},
    {"inference": ("garage.infer",)},
    {"llm": ("garage.llm",)},
    {"scoring": ("garage.scoring",)},
    {"evaluation": ("garage.evaluation",)},
    {"training": ("garage.train",), "augment": ("garage.augment",), "hub": ("garage.hub",)},
    {"optimisation": ("garage.optimize",)},
    {"jobs": ("garage.jobs",)},
    {"ui": ("garage.ui", "garage.__main__")},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in (ROOT / "garage").rglob("*.py")}


def layer_of(module: str) -> tuple[int, str]:
    """(rank, layer name) of a module: the layer with the longest prefix that names it."""
    best = None
    for rank, row in enumerate(LAYERS):
        for name, prefixes in row.items():
            for prefix in prefixes:
                if module == prefix or (prefix != "garage" and module.startswith(prefix + ".")):
                    if best is None or len(prefix) > best[0]:
                        best = (len(prefix), rank, name)
    assert best is not None, f"{module} is in no layer of LAYERS: add it"
    return best[1], best[2]


def resolve(name: str) -> str | None:
    """The garage module an import names (``garage.data.rows.dataset_rows`` -> ``garage.data.rows``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def project_imports(module: str):
    """(imported module, line, inside a function) for each import of a garage module in ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            target = resolve(name) if name.split(".")[0] == "garage" else None
            if target and target != module:
                yield target, node.lineno, node.col_offset > 0


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_go_down_the_layers_only():
    wrong = []
    for module in MODULES:
        rank, name = layer_of(module)
        for target, line, _ in project_imports(module):
            target_rank, target_name = layer_of(target)
            if target_rank > rank or (target_rank == rank and target_name != name):
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line} ({name}) imports {target} ({target_name})")
    assert not wrong, "imports that go up a layer or sideways:\n" + "\n".join(wrong)


def test_no_import_circle():
    graph = {module: {target for target, _, _ in project_imports(module)} for module in MODULES}
    seen, on_path, circles = set(), [], []

    def visit(module):
        if module in on_path:
            circles.append(" -> ".join(on_path[on_path.index(module):] + [module]))
            return
        if module in seen:
            return
        seen.add(module)
        on_path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        on_path.pop()

    for module in sorted(graph):
        visit(module)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_an_import_inside_a_function_says_why():
    """Only to keep a heavy library out of start-up, and then a comment on its line or the line above says so."""
    silent = []
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for _target, line, inner in project_imports(module):
            if inner and "#" not in lines[line - 1] and not lines[line - 2].strip().startswith("#"):
                silent.append(f"{path.relative_to(ROOT)}:{line}: {lines[line - 1].strip()}")
    assert not silent, "project imports inside functions without a reason:\n" + "\n".join(silent)


def test_the_architecture_page_shows_these_layers_in_this_order():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    shown = re.findall(r"^\| \*\*([a-z ]+)\*\* \|", text, flags=re.M)
    assert shown == [name for row in reversed(LAYERS) for name in row], \
        "ARCHITECTURE.md's layer table is not LAYERS (top to bottom)"
