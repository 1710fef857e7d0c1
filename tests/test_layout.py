"""The import rules of ../shared/STYLE.md, from one table: leaves stay leaves, nothing imports cli,
and no package module grows past the size limit."""

import ast
import pathlib
import subprocess
import sys

PKG = pathlib.Path(__file__).resolve().parents[1] / "keras_captioning"

# The one table of import rules: each top-level module or package of keras_captioning -> the
# others it may import (lazily or not). A module missing here fails the test: add it.
# "errors" is the one leaf under all; "utils" raises its errors.
# "__init__" is ``from keras_captioning import __version__``.
LEAVES = {"errors": set(), "utils": {"errors"}}
ALLOWED = {
    **LEAVES,
    "ranges": {"errors"},
    "config": {"errors", "ranges"},
    "metrics": {"errors"},
    "losses": set(),
    "data": {"errors", "ranges", "utils"},
    "features": {"__init__", "config", "data", "errors", "utils"},
    "decoding": {"errors"},
    "models": {"errors", "losses", "ranges"},
    "run_directory": {"__init__", "config", "data", "errors", "features", "utils"},
    "training": {"config", "data", "decoding", "errors", "features", "metrics", "models", "ranges",
                 "run_directory", "utils", "viz"},
    "viz": {"utils"},
    "split_decoding": {"data", "decoding", "errors", "features", "models", "run_directory", "training"},
    "evaluate": {"__init__", "config", "data", "decoding", "errors", "features", "metrics", "models", "ranges",
                 "run_directory", "split_decoding", "training", "utils", "viz"},
    "gallery": {"errors", "utils", "viz"},
    "bundle": {"__init__", "data", "errors", "features", "models", "training", "utils"},
    "captioner": {"bundle", "decoding", "errors", "features", "models", "ranges", "run_directory",
                  "split_decoding", "utils", "viz"},
    "export": {"__init__", "decoding", "errors", "features", "utils"},
    "demo": {"config", "data", "errors", "evaluate", "features", "run_directory", "training", "utils"},
    "cli": {"captioner", "config", "data", "demo", "errors", "evaluate", "export", "features", "gallery",
            "ranges", "training"},
    "__main__": {"cli"},
}


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name


def _top(path) -> str:
    """The top-level module or package a file belongs to."""
    first = path.relative_to(PKG).parts[0]
    return first[:-3] if first.endswith(".py") else first


def test_import_rules():
    """Every import between top-level parts is allowed by ALLOWED, and ALLOWED lists every part."""
    violations, unknown = [], set()
    for path in PKG.rglob("*.py"):
        top = _top(path)
        if top == "__init__":
            continue
        if top not in ALLOWED:
            unknown.add(top)
            continue
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] != "keras_captioning":
                continue
            target = parts[1] if len(parts) > 1 else "__init__"
            if target != top and target not in ALLOWED[top]:
                violations.append(f"{path.relative_to(PKG)} imports {module}")
    assert not unknown, f"add these modules to ALLOWED in tests/test_layout.py: {sorted(unknown)}"
    assert not violations, violations


def test_leaves_do_not_load_tensorflow():
    for name in ("errors", "utils", "ranges", "config", "metrics", "run_directory"):
        module, package = PKG / f"{name}.py", PKG / name
        paths = [module] if module.exists() else sorted(package.rglob("*.py"))
        assert paths, f"{name}: neither a module nor a package"
        for path in paths:
            imports = {m.split(".")[0] for m in _imports(path)}
            assert not imports & {"tensorflow", "keras"}, path.relative_to(PKG)


def test_nothing_imports_cli():
    users = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
             if p.name not in ("cli.py", "__main__.py") and "keras_captioning.cli" in set(_imports(p))]
    assert not users


def test_light_imports_do_not_load_tensorflow():
    code = ("import sys, keras_captioning, keras_captioning.config, keras_captioning.metrics, "
            "keras_captioning.data.vocab, keras_captioning.utils, keras_captioning.run_directory, "
            "keras_captioning.data.download; print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


MAX_LINES = 420  # "no package module over ~400 lines"; the benchmarks too


def test_no_module_is_too_long():
    root = PKG.parent
    paths = [*PKG.rglob("*.py"), *(root / "benchmarks").glob("*.py")]
    long = {name: n for p in paths
            if (n := len(p.read_text().splitlines())) > MAX_LINES and (name := str(p.relative_to(root)))}
    assert not long, long


def _module_name(path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(module: str, node) -> list[str]:
    """The package modules an import statement names (``from a import b``: ``a.b`` when it is a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:  # relative: resolve against the importing module's package
            base = module.split(".")[:len(module.split(".")) - node.level + (1 if _is_package(module) else 0)]
            names = [".".join(base + ([node.module] if node.module else []))]
        else:
            names = [node.module]
        names = [f"{names[0]}.{alias.name}" if _exists(f"{names[0]}.{alias.name}") else names[0]
                 for alias in node.names]
    return [n for n in names if n.split(".")[0] == "keras_captioning" and _exists(n)]


def _exists(name: str) -> bool:
    path = PKG.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _is_package(name: str) -> bool:
    return (PKG.parent.joinpath(*name.split(".")) / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its file (lazy imports included)."""
    graph = {}
    for path in PKG.rglob("*.py"):
        name = _module_name(path)
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(t for t in _targets(name, node) if t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_level_import_cycle():
    """No module imports, directly or through others, one that imports it back (lazy imports count)."""
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "keras_captioning.features.feature_folder" in graph["keras_captioning.features.build"]


def test_no_private_keras_api():
    """No ``keras.src`` import, and no class of the package (a Keras subclass or a mixin of one)
    defines a private name of a Keras or tf.distribute base class (Keras 3 may rename or drop
    those at any release)."""
    import importlib
    import inspect

    for path in sorted(PKG.rglob("*.py")):
        assert "keras.src" not in path.read_text(encoding="utf-8"), f"{path}: imports keras.src"
    import keras
    import tensorflow as tf

    bases = (keras.layers.Layer, keras.Model, keras.optimizers.Optimizer, keras.callbacks.Callback,
             keras.metrics.Metric, tf.distribute.Strategy)
    checked = 0
    for path in sorted(PKG.rglob("*.py")):
        name = _module_name(path)
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name:
                continue
            checked += 1
            for attr in vars(cls):
                if attr.startswith("_") and not attr.startswith("__"):
                    assert not any(hasattr(b, attr) for b in bases), \
                        f"{name}.{cls.__name__}.{attr} overrides a private name of Keras or tf.distribute"
    assert checked > 10
