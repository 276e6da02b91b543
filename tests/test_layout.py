"""The architecture, checked from the source: layers import downwards only, no import cycles, no private names taken
from another module. Every import counts, at module level or inside a function (a lazy import is still a
dependency). kernels/ is read as tinyvit_engine.kernels, as it is installed."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "tinyvit_engine"
# lowest first; a module imports from its own unit (a top-level module, or a subpackage) or from a lower layer
LAYERS = [
    {"_layout", "errors", "kernels", "weights"},
    {"config", "graph"},
    {"models", "fusion", "ops"},
    {"executor"},
    {"formats"},
    {"postprocess"},
    {"processor"},
    {"model"},
    {"api", "jobs"},
    {"serve"},
    {"bench"},
    {"cli"},
    {"__init__", "__main__"},
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _modules() -> dict[str, Path]:
    """Module name -> file, for the package and the root folders installed into it."""
    found = {}
    for base, prefix in (
        (ROOT / PACKAGE, PACKAGE),
        (ROOT / "kernels", f"{PACKAGE}.kernels"),
        (ROOT / "weights", f"{PACKAGE}.weights"),
    ):
        for file in base.rglob("*.py"):
            parts = list(file.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = file
    return found


MODULES = _modules()


def _unit(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def _imports(module: str, file: Path) -> list[tuple[str, str | None, int]]:
    """(imported module, name taken from it or None, line) for every import of the package's own modules."""
    is_package = file.name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            source = ".".join(base + (node.module.split(".") if node.module else []))
            if source.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (source, alias.name, node.lineno))
    return out


def test_layers_import_downwards_only():
    wrong = []
    for module, file in MODULES.items():
        unit = _unit(module)
        assert unit in LAYER or module.endswith("__main__"), f"{module}: a unit that LAYERS does not place"
        for target, _, line in _imports(module, file):
            other = _unit(target)
            if other != unit and LAYER[other] >= LAYER.get(unit, len(LAYERS)):
                wrong.append(f"{file.relative_to(ROOT)}:{line} imports {target} ({other} is not below {unit})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    edges = {m: {t for t, _, _ in _imports(m, f) if t in MODULES and t != m} for m, f in MODULES.items()}
    done, stack = set(), []

    def visit(m: str) -> None:
        if m in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m) :] + [m]))
        if m in done:
            return
        stack.append(m)
        for t in sorted(edges[m]):
            visit(t)
        stack.pop()
        done.add(m)

    for m in sorted(edges):
        visit(m)


def test_no_private_names_across_modules():
    """A name another module needs is public: no `from x import _y` of a function or class, no `x._y`, except a
    private submodule of one's own subpackage (kernels/_gemm.py is the kernel library's own)."""
    wrong = []
    for module, file in MODULES.items():
        tree = ast.parse(file.read_text(), str(file))
        imported = {}  # local name -> module it is bound to
        for target, name, line in _imports(module, file):
            if name is not None and name.startswith("_") and not name.startswith("__"):
                wrong.append(f"{file.relative_to(ROOT)}:{line} takes {name} from {target}")
            hidden = [p for p in target.split(".")[1:] if p.startswith("_") and not p.startswith("__")]
            if hidden and _unit(target) != _unit(module) and target.rpartition(".")[0] != module:
                wrong.append(f"{file.relative_to(ROOT)}:{line} imports from another unit's private module {target}")
            if name is None:
                imported[target.rsplit(".", 1)[-1]] = target
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and f"{imported[node.value.id]}.{node.attr}" not in MODULES
            ):
                wrong.append(f"{file.relative_to(ROOT)}:{node.lineno} reads {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def test_numba_internals_are_touched_in_one_place():
    """Numba's private attributes (`._cache`, `._get_module_for_linking`, ...) only in kernels/_jit.py, which checks
    the Numba version it was written for."""
    private = (
        "._cache._cache_file",
        "._get_module_for_linking",
        "._shared_module",
        "._load_index",
        "._source_stamp",
        ".overloads",
        ".disable_compile",
        "SLP_VECTORIZE",
    )
    wrong = [
        f"{file.relative_to(ROOT)} uses {p}"
        for module, file in MODULES.items()
        if file.name != "_jit.py"
        for p in private
        if p in file.read_text()
    ]
    assert not wrong, "\n".join(wrong)
