"""The folder layout is the architecture: every import (module-level or inside a function) goes
down the layers below or stays inside its own package, and no set of modules imports itself in a
circle. Read from the source with ``ast``, so nothing is imported to check it.

    layer 0  byoc_common                         what both images share
    layer 1  container_train, container_serve    the two images' code (never each other, never byoc)
    layer 2  byoc.errors                         the one user-facing error base
    layer 3  byoc.settings, byoc.console, byoc.packaging
    layer 4  byoc.datasets, byoc.local           datasets; the local job and endpoint runners, the client
    layer 5  byoc.rules, byoc.report, byoc.tuning
    layer 6  byoc.aws                            every AWS call
    layer 7  byoc.backends                       the Backend interface, local and SageMaker
    layer 8  byoc.pipeline                       the main job, on a backend
    layer 9  byoc.cli                            one module per subcommand

Run it alone: ``.venv/bin/pytest tests/structure -q``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = {"byoc_common": REPO / "byoc_common", "container_train": REPO / "container_train",
           "container_serve": REPO / "container_serve", "byoc": REPO / "scripts" / "byoc"}
# A unit holds the module of that name and every module below it, except "byoc" itself: that is only
# the package's own __init__, so a new subpackage of byoc must be given its layer here.
LAYERS = {
    "byoc_common": 0, "container_train": 1, "container_serve": 1,
    "byoc": 2, "byoc.errors": 2,
    "byoc.settings": 3, "byoc.console": 3, "byoc.packaging": 3, "byoc.gradcam": 3,
    "byoc.datasets": 4, "byoc.local": 4,
    "byoc.rules": 5, "byoc.report": 5, "byoc.tuning": 5,
    "byoc.aws": 6, "byoc.backends": 7, "byoc.pipeline": 8, "byoc.cli": 9, "byoc.__main__": 10,
}


ONLY_ITSELF = {"byoc"}


def _modules(sources: dict[str, Path] = SOURCES) -> dict[str, Path]:
    found = {}
    for top, root in sources.items():
        for path in root.rglob("*.py"):
            parts = [top, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """Project modules ``module`` imports anywhere in its file (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            subs = [f"{base}.{a.name}" for a in node.names]
            names = subs if all(n in MODULES for n in subs) else [*subs, base]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):   # parents load first anyway
                out.add(name)
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _unit_of(module: str) -> str | None:
    return max((u for u in LAYERS if module == u or (module.startswith(u + ".") and u not in ONLY_ITSELF)),
               key=len, default=None)


def _layer_of(module: str) -> tuple[str, int]:
    unit = _unit_of(module)
    if unit is None:
        pytest.fail(f"{module} belongs to no layer: add its package to LAYERS (and to README's Layout)")
    return unit, LAYERS[unit]


def _without_layer(modules) -> list[str]:
    return sorted(m for m in modules if _unit_of(m) is None)


def test_every_module_has_a_layer():
    assert _without_layer(MODULES) == [], "add these packages to LAYERS (and to README's Layout)"


def test_a_module_without_a_layer_is_found(tmp_path):
    """A new byoc subpackage (or module) is not silently given the layer of ``byoc`` itself."""
    for rel in ("byoc/__init__.py", "byoc/errors.py", "byoc/newthing/__init__.py", "byoc/newthing/x.py",
                "byoc/loose.py", "byoc_common/y.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    found = _modules({"byoc": tmp_path / "byoc", "byoc_common": tmp_path / "byoc_common"})
    assert _without_layer(found) == ["byoc.loose", "byoc.newthing", "byoc.newthing.x"]


def test_no_import_goes_up_or_sideways():
    wrong = []
    for module, targets in GRAPH.items():
        unit, layer = _layer_of(module)
        for target in targets:
            t_unit, t_layer = _layer_of(target)
            if t_unit != unit and t_layer >= layer:
                wrong.append(f"{module} -> {target} (layer {layer} -> {t_layer})")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    """Tarjan's strongly connected components over every import edge."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_the_check_sees_real_edges():
    """The walker finds imports inside functions too (so the tests above can fail)."""
    assert "byoc.backends.local" in GRAPH["byoc.backends"]          # imported inside backend_for()
    assert "container_train.contract" in GRAPH["byoc.local.client"]
