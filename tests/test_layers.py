"""stylert's parts import only downward. Every module under sdk/stylert is parsed (nothing is imported or run)
and every import in it is resolved, relative ones and those inside functions included; an import of a part of a
higher layer, of another part of the same layer, or of the package root fails the test with one line per import:
`module -> module (layer X imports layer Y)`.

Layers, lowest first (a module may import its own part and any part of a lower layer):

    errors, _version < runtime < faces < calls < tools, video < serving < cli

`tools` and `video` share a layer and import neither each other: nothing in one needs the other, and keeping
them apart keeps `stylert bench`'s and `stylert build-engine`'s imports free of the video code and back.
The package root, `stylert/__init__.py`, is the facade: it may import any part, and no module inside the package
imports it (`from .. import X` with X defined in `__init__.py` loads every part; import X from where it lives).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SDK = Path(__file__).parents[1] / "sdk" / "stylert"
PACKAGE = "stylert"
LAYERS = (  # lowest first; the parts of one layer do not import each other
    ("errors", "_version"),
    ("runtime",),
    ("faces",),
    ("calls",),
    ("tools", "video"),
    ("serving",),
    ("cli",),
)
LEVEL = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def modules_of(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under root (a package's __init__.py is the package)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((package, *parts))] = path
    return found


def part_of(module: str) -> str | None:
    """The part (first name below the package) a module belongs to; None for the package root."""
    names = module.split(".")
    return names[1] if len(names) > 1 else None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules this file imports anywhere in it (module level, functions, TYPE_CHECKING blocks,
    `importlib.import_module("stylert...")` with a literal name). `from P import name` counts as importing the
    module P.name when there is one, else P itself (P's __init__.py defines the name)."""
    is_package = path.name == "__init__.py"
    here = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()

    def nearest(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def add(name: str) -> None:
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            target = nearest(name)
            if target is not None:
                found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            if not (source == PACKAGE or source.startswith(PACKAGE + ".")):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in modules else source)
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            add(node.args[0].value)
    found.discard(module)
    return found


def violations(root: Path, package: str = PACKAGE) -> list[str]:
    """One line per upward, sideways or package-root import."""
    modules = modules_of(root, package)
    lines = []
    for module, path in modules.items():
        source = part_of(module)
        if source is None:
            continue  # the facade imports what it exports
        for target in sorted(imports_of(module, path, modules)):
            dest = part_of(target)
            if dest is None:
                lines.append(f"{module} -> {target} (layer {source} imports the package root {package}/__init__.py)")
            elif dest != source and (dest not in LEVEL or source not in LEVEL or LEVEL[dest] >= LEVEL[source]):
                lines.append(f"{module} -> {target} (layer {source} imports layer {dest})")
    return lines


def test_every_part_has_a_layer():
    """A new module or folder under sdk/stylert must be given a layer here before anything can import it."""
    parts = {part_of(m) for m in modules_of(SDK)} - {None}
    assert parts, f"no modules found under {SDK}"
    assert not parts - set(LEVEL), f"give these parts of stylert a layer in LAYERS: {sorted(parts - set(LEVEL))}"
    assert not set(LEVEL) - parts, f"LAYERS names parts that do not exist: {sorted(set(LEVEL) - parts)}"


def test_imports_only_go_down():
    found = violations(SDK)
    print("\n".join(found))
    assert not found, f"{len(found)} import(s) against the layers (lowest first: " + \
        " < ".join(", ".join(p) for p in LAYERS) + "):\n" + "\n".join(found)


CASES = {
    "runtime/model.py": ("def f():\n    from ..calls import retouch\n", "stylert.runtime.model -> stylert.calls.retouch "
                                                                         "(layer runtime imports layer calls)"),
    "tools/bench.py": ("from .. import __version__\n", "stylert.tools.bench -> stylert (layer tools imports the package "
                                                       "root stylert/__init__.py)"),
    "video/stream.py": ("import stylert.tools.bench as b\n", "stylert.video.stream -> stylert.tools.bench (layer video "
                                                            "imports layer tools)"),
    "faces/pipeline.py": ("from stylert.serving.controls import call_of\n", "stylert.faces.pipeline -> "
                          "stylert.serving.controls (layer faces imports layer serving)"),
    "errors.py": ("import importlib\nimportlib.import_module('stylert.cli')\n", "stylert.errors -> stylert.cli (layer "
                                                                               "errors imports layer cli)"),
    "calls/retouch.py": ("from ..tools import bench\n", "stylert.calls.retouch -> stylert.tools.bench (layer calls imports "
                                                       "layer tools)"),
}


@pytest.mark.parametrize("file", sorted(CASES))
def test_the_walk_finds_each_kind_of_import(tmp_path, file):
    """The checker itself, on a small package of the same shape: each kind of upward import is found, and the allowed
    ones (down, within a part, the facade importing anything) are not."""
    root = tmp_path / "stylert"
    for name in ("errors.py", "_version.py", "cli.py", "runtime/model.py", "faces/pipeline.py", "calls/retouch.py",
                 "tools/bench.py", "video/stream.py", "serving/controls.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).parent.joinpath("__init__.py").touch()
        (root / name).touch()
    (root / "__init__.py").write_text("from .cli import main\nfrom .tools.bench import bench\n__version__ = '0'\n")
    (root / "serving/controls.py").write_text("from ..calls.retouch import R\nfrom . import controls\n"
                                              "def f():\n    from ..runtime import model\n    import stylert.errors\n")
    (root / "cli.py").write_text("from .serving.controls import call_of\nfrom ._version import __version__\n")
    assert violations(root) == []
    source, expected = CASES[file]
    (root / file).write_text(source)
    assert violations(root) == [expected]
