"""The core stays free of I/O, and dependencies point inward (DESIGN.md section 2)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "voip"
IO_MODULES = {"socket", "select", "threading", "time", "sounddevice", "soundfile", "asyncio", "subprocess"}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_modules_do_no_io():
    for path in PACKAGE.glob("*.py"):
        if path.name == "__main__.py":
            continue
        bad = {name for name in imports(path) if name.split(".")[0] in IO_MODULES}
        assert not bad, f"{path.name} imports {bad}"
        assert not any(name.startswith(("voip.io", "voip.cli")) for name in imports(path)), path.name


def test_edges_do_not_import_the_cli():
    for path in (PACKAGE / "io").glob("*.py"):
        assert "voip.cli" not in imports(path), path.name
