"""The import rules of ../shared/STYLE.md: leaves stay leaves, nothing imports cli."""

import ast
import pathlib
import subprocess
import sys

PKG = pathlib.Path(__file__).resolve().parents[1] / "keras_captioning"

# package -> sub-packages it must never import
FORBIDDEN = {
    "config": {"data", "features", "models", "decoding", "training", "metrics", "evaluate", "cli"},
    "ranges": {"config", "data", "features", "models", "decoding", "training", "metrics", "evaluate", "cli"},
    "metrics": {"data", "features", "models", "decoding", "training", "evaluate", "cli"},
    "data": {"features", "models", "decoding", "training", "metrics", "evaluate", "cli"},
    "models": {"data", "features", "training", "metrics", "evaluate", "cli"},
    "decoding": {"data", "features", "models", "training", "metrics", "evaluate", "cli"},
    "losses": {"data", "features", "models", "decoding", "training", "metrics", "evaluate", "cli"},
}


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name


def _files(name):
    target = PKG / name
    return [target.with_suffix(".py")] if target.with_suffix(".py").exists() else list(target.rglob("*.py"))


def test_import_rules():
    violations = []
    for name, banned in FORBIDDEN.items():
        for path in _files(name):
            for module in _imports(path):
                parts = module.split(".")
                if parts[0] == "keras_captioning" and len(parts) > 1 and parts[1] in banned:
                    violations.append(f"{path.relative_to(PKG)} imports {module}")
    assert not violations, violations


def test_nothing_imports_cli():
    users = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
             if p.name not in ("cli.py", "__main__.py") and "keras_captioning.cli" in set(_imports(p))]
    assert not users


def test_light_imports_do_not_load_tensorflow():
    code = ("import sys, keras_captioning, keras_captioning.config, keras_captioning.metrics, "
            "keras_captioning.data.vocab; print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
