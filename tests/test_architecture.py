"""docs/architecture.md stays true: its layer table against every module's imports, and its worked example runs.

The table is read from the document itself (the first table under "## Layers"),
so a module added, moved or importing across a layer fails here until the code
or the document is put right.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from longtail.config import load_config
from longtail.errors import ConfigError
from longtail.methods import METHODS, unregister_method

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "longtail"
DOC = ROOT / "docs" / "architecture.md"
EVERYTHING = "everything"
BELOW_COMMANDS = ("base", "data and models", "engine", "methods")
COMMAND_MODULES = ("pipeline", "report", "export", "grid", "demo", "cli")


@dataclass(frozen=True)
class Layer:
    name: str
    entries: tuple[str, ...]  # "fs/" (a package and all in it) or "runs" (one module, or a package's __init__)
    may_import: frozenset[str]


def layer_table() -> list[Layer]:
    """The rows of the first table under "## Layers" in docs/architecture.md."""
    section = DOC.read_text(encoding="utf-8").split("\n## Layers", 1)[1]
    lines = section.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, rows = table[0], table[2:]
    assert header[:3] == ["layer", "modules", "may import"], header
    names = [row[0] for row in rows]
    layers = []
    for name, modules, may_import, *_ in rows:
        entries = tuple(re.findall(r"`([^`]+)`", modules))
        allowed = {part.strip() for part in may_import.split(",")}
        unknown = allowed - {*names, EVERYTHING}
        assert not unknown, f"docs/architecture.md: layer {name!r} may import unknown layers {sorted(unknown)}"
        layers.append(Layer(name, entries, frozenset(names if EVERYTHING in allowed else allowed)))
    return layers


def module_name(path: Path) -> str:
    """``fs/atomic`` for src/longtail/fs/atomic.py, ``fs`` for its ``__init__``, ``__init__`` for the package's."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return "/".join(parts)


def layer_of(name: str, layers: list[Layer]) -> Layer | None:
    """The row whose longest entry matches ``name`` (a module as :func:`module_name` writes it)."""
    matches = [
        (len(entry), layer)
        for layer in layers
        for entry in layer.entries
        if name == entry.rstrip("/") or (entry.endswith("/") and name.startswith(entry))
    ]
    return max(matches, key=lambda match: match[0])[1] if matches else None


def _exists(name: str) -> bool:
    return (SRC / f"{name}.py").is_file() or (SRC / name / "__init__.py").is_file()


def _target(dotted: str) -> str | None:
    """``longtail.a.b`` -> ``a/b``; ``longtail`` -> ``__init__``; None for a module outside longtail."""
    if dotted != "longtail" and not dotted.startswith("longtail."):
        return None
    return "/".join(dotted.split(".")[1:]) or "__init__"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every longtail module ``path`` imports, at module level or inside a function.

    ``from . import register_method`` imports the package; ``from .data import fingerprint`` its module.
    """
    name = module_name(path)
    dotted = "longtail" if name == "__init__" else "longtail." + name.replace("/", ".")
    package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = _target(f"{source}.{alias.name}")
                found.append((node.lineno, f"{source}.{alias.name}" if submodule and _exists(submodule) else source))
    return [(line, target) for line, dotted_name in found if (target := _target(dotted_name)) is not None]


MODULES = sorted(SRC.rglob("*.py"))


def test_the_table_names_modules_that_exist():
    for layer in layer_table():
        for entry in layer.entries:
            assert _exists(entry.rstrip("/")), f"docs/architecture.md: {layer.name} lists `{entry}`: no such module"


def test_every_module_is_in_the_layer_table():
    layers = layer_table()
    missing = [module_name(path) for path in MODULES if layer_of(module_name(path), layers) is None]
    assert missing == [], f"modules in no row of docs/architecture.md's layer table: {missing}"


def test_every_import_follows_the_layer_table():
    layers = layer_table()
    wrong = []
    for path in MODULES:
        layer = layer_of(module_name(path), layers)
        for line, target in imports_of(path):
            imported = layer_of(target, layers)
            assert imported is not None, f"{path.relative_to(SRC)}:{line} imports {target}, which the table lacks"
            if imported.name not in layer.may_import:
                wrong.append(f"{path.relative_to(SRC)}:{line} ({layer.name}) imports {target} ({imported.name})")
    assert wrong == [], "imports the layer table of docs/architecture.md forbids:\n" + "\n".join(wrong)


def test_nothing_below_the_commands_imports_them_and_sklearn_needs_no_run_directory():
    layers = {layer.name: layer for layer in layer_table()}
    for name in BELOW_COMMANDS:  # the table's own rows say it; this keeps the table from drifting into allowing it
        for module in COMMAND_MODULES:
            assert layer_of(module, list(layers.values())).name not in layers[name].may_import, (name, module)
    for path in sorted((SRC / "sklearn").rglob("*.py")):
        for line, target in imports_of(path):
            assert target.split("/")[0] not in COMMAND_MODULES, f"{path.relative_to(SRC)}:{line} imports {target}"


def test_the_reader_of_results_does_not_load_the_pipeline():
    probe = (
        "import sys, longtail.evaluation.compare\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['longtail', 'pipeline'], ['longtail', 'report'], ['longtail', 'cli'])))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "[]", done.stdout


# --- the worked example ---------------------------------------------------------------------------------------


def worked_example() -> str:
    """The code block under "## Adding a method: a worked example"."""
    section = DOC.read_text(encoding="utf-8").split("## Adding a method: a worked example", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture
def debias_module():
    """The worked example loaded as written, as the module ``longtail.methods.debias`` (it registers itself)."""
    code = worked_example()
    assert code.startswith("# src/longtail/methods/debias.py")
    spec = importlib.util.spec_from_loader("longtail.methods.debias", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "longtail.methods"
    assert "debias" not in METHODS
    sys.modules[spec.name] = module  # as an imported method file is (dataclasses look its module up)
    try:
        # dont_inherit: the example runs under its own __future__ flags, not this file's.
        exec(compile(code, str(DOC), "exec", dont_inherit=True), module.__dict__)  # noqa: S102 - our own document
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        if "debias" in METHODS:
            unregister_method("debias")


def test_the_worked_example_runs_as_a_method_file(debias_module):
    assert METHODS["debias"].label == "Debiased" and METHODS["debias"].config is debias_module.DebiasConfig
    config = load_config(None, ["decouple.debias.strength=0.25"])
    with pytest.raises(ConfigError, match=r"decouple\.debias\.strength=2\.0: expected a number in \[0, 1\]"):
        load_config(None, ["decouple.debias.strength=2"])  # its check names ConfigError: the import is there
    joint = torch.nn.Linear(3, 2)
    fitted = debias_module.fit(SimpleNamespace(config=config, joint=joint))
    assert torch.equal(fitted.head.weight, joint.weight.detach())
    assert torch.allclose(fitted.head.bias, joint.bias.detach() * 0.75) and fitted.info == {"strength": 0.25}
