"""streamhost.client stands alone: nothing else of ours, no torch, boto3 only when asked."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import streamhost.client

CLIENT_DIR = Path(streamhost.client.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_client_modules_import_nothing_else_from_streamhost():
    for path in CLIENT_DIR.glob("*.py"):
        ours = {name for name in imported_modules(path) if name.startswith("streamhost")}
        assert all(name.startswith("streamhost.client") for name in ours), (path.name, ours)


def test_importing_the_client_loads_neither_torch_nor_boto3_nor_other_streamhost_packages():
    code = (
        "import sys, streamhost.client\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'boto3', 'httpx', 'aiohttp')"
        " or (m.startswith('streamhost.') and not m.startswith('streamhost.client'))]\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
