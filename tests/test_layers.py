"""The import rules of docs/architecture.md: a lower layer never imports a higher one.

Every ``import``/``from ... import`` of the project's own packages (module level and inside
functions) is checked against ``ALLOWED``. A new package must be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Layer of a module: the longest matching prefix.
LAYERS = {
    "ial": "foundation",  # ial/__init__ and the foundation modules listed below
    "ial.config": "foundation", "ial.config_files": "foundation", "ial.registry": "foundation",
    "ial.storage": "foundation",
    "ial.media": "foundation", "ial.signal": "foundation", "ial.native": "foundation",
    "ial.errors": "foundation", "ial.runtime": "foundation", "ial.parquet_reading": "foundation",
    "ial.models": "models",
    "preprocessing": "contracts",  # preprocessing/__init__, clip_index, shard_schema, shards
    "preprocessing.ingest": "ingest",
    "preprocessing.featurize": "featurize",
    "ial.method": "method",
    "ial.data": "data",
    "ial.separate": "separate",
    "ial.evaluate": "evaluate",
    "ial.training": "training",
    "ial.nightly": "nightly",
    "flows": "flows",
    "ial.cli": "apps",
    "ial.demo": "apps",
}

_BASE = {"foundation"}
ALLOWED = {
    "foundation": _BASE,
    "models": _BASE | {"models"},
    "contracts": _BASE | {"contracts"},
    "ingest": _BASE | {"contracts", "ingest"},
    "featurize": _BASE | {"models", "contracts", "featurize"},
    "method": _BASE | {"models", "method"},
    "data": _BASE | {"models", "contracts", "method", "data"},
    "separate": _BASE | {"models", "contracts", "featurize", "separate"},
    "evaluate": _BASE | {"models", "contracts", "method", "data", "separate", "evaluate"},
    "training": _BASE | {"models", "contracts", "method", "data", "separate", "evaluate",
                         "training"},
    "nightly": _BASE | {"models", "contracts", "method", "data", "separate", "evaluate",
                        "training", "nightly"},
    "flows": set(ALL := {"foundation", "models", "contracts", "ingest", "featurize", "method",
                         "data", "separate", "evaluate", "training", "nightly", "flows"}),
    "apps": ALL | {"apps"},
}
PACKAGES = ("ial", "preprocessing", "flows")


def layer_of(module: str) -> str | None:
    if module.endswith(".__main__"):  # `python -m ial.evaluate` is an application entry point
        return "apps"
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import of a project package in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in PACKAGES:  # `from ial import signal`
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, m) for line, m in found if m.split(".")[0] in PACKAGES]


def violations(path: Path) -> list[str]:
    importer = module_name(path)
    own = layer_of(importer)
    assert own is not None, f"{path}: module {importer} has no layer in tests/test_layers.py"
    out = []
    for line, module in imported_modules(ast.parse(path.read_text(), str(path))):
        target = layer_of(module)
        if target is None:
            out.append(f"{path.relative_to(REPO)}:{line}: {module} has no layer")
        elif target not in ALLOWED[own]:
            out.append(f"{path.relative_to(REPO)}:{line}: {importer} ({own}) imports "
                       f"{module} ({target})")
    return out


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def test_every_module_respects_the_import_rules():
    problems = [v for path in source_files() for v in violations(path)]
    assert not problems, "import rules broken:\n" + "\n".join(problems)


@pytest.mark.parametrize("importer, imported, ok", [
    ("preprocessing/ingest/run.py", "ial.training.trainer", False),
    ("preprocessing/featurize/run.py", "preprocessing.ingest.slicing", False),
    ("ial/models/base.py", "ial.method.losses", False),
    ("ial/training/trainer.py", "flows.train", False),
    ("flows/train.py", "ial.training.launcher", True),
    ("ial/cli/serve.py", "flows.deployments", True),
])
def test_the_rule_catches_an_upward_import(tmp_path, importer, imported, ok):
    """The checker itself: a file at ``importer`` importing ``imported`` is (not) reported."""
    path = REPO / importer
    fake = path.with_name("_layer_probe.py")
    fake.write_text(f"import {imported}\n")
    try:
        assert (violations(fake) == []) == ok
    finally:
        fake.unlink()


def test_no_module_over_400_lines_and_no_folder_over_10_modules():
    long = [f"{p.relative_to(REPO)}: {n}" for p in source_files()
            if (n := len(p.read_text().splitlines())) > 400]
    assert not long, "modules over 400 lines: " + ", ".join(long)
    folders: dict[Path, int] = {}
    for p in source_files():
        if p.name != "__init__.py":
            folders[p.parent] = folders.get(p.parent, 0) + 1
    crowded = [f"{d.relative_to(REPO)}: {n}" for d, n in folders.items() if n > 10]
    assert not crowded, "folders with more than 10 modules: " + ", ".join(crowded)


def test_no_line_over_100_characters():
    """The code style's line limit, in the packages, the tests and the benchmarks."""
    files = source_files() + sorted((REPO / "tests").rglob("*.py")) + sorted(
        (REPO / "benchmarks").rglob("*.py"))
    long = [f"{p.relative_to(REPO)}:{i}: {len(line)}" for p in files
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if len(line) > 100]
    assert not long, "lines over 100 characters:\n" + "\n".join(long)
