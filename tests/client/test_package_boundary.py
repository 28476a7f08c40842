"""Package boundaries, checked.

streamhost.client stands alone: nothing else of ours, no torch, boto3 only when asked.
streamhost.endpoints, which the terminal commands and the chat UI share, needs only the
client: no Streamlit, no gateway. streamhost.processes, which the gateway shares with the
commands, needs nothing of ours.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import streamhost.client
import streamhost.endpoints
import streamhost.processes

CLIENT_DIR = Path(streamhost.client.__file__).parent
ENDPOINTS_DIR = Path(streamhost.endpoints.__file__).parent


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


def loaded_by(imports: str) -> list[str]:
    """The modules of Streamlit, torch and our gateway, server and engine that running
    ``imports`` in a fresh interpreter loads."""
    code = (
        f"import sys\n{imports}\n"
        "heavy = ('streamlit', 'torch')\n"
        "ours = ('streamhost.gateway', 'streamhost.server', 'streamhost.engine')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(ours)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return ast.literal_eval(result.stdout)


def test_endpoints_modules_import_only_the_client_from_streamhost():
    for path in ENDPOINTS_DIR.glob("*.py"):
        ours = {name for name in imported_modules(path) if name.startswith("streamhost")}
        allowed = ("streamhost.client", "streamhost.endpoints")
        assert all(name.startswith(allowed) for name in ours), (path.name, ours)


def test_importing_the_shared_helpers_loads_neither_streamlit_nor_the_gateway():
    modules = sorted(path.stem for path in ENDPOINTS_DIR.glob("*.py") if path.stem != "__init__")
    assert modules, "no modules found in streamhost.endpoints"
    imports = "\n".join(f"import streamhost.endpoints.{name}" for name in modules)
    assert loaded_by(imports) == []


def test_the_terminal_commands_load_neither_streamlit_nor_the_gateway_until_run():
    imports = "import streamhost.cli\nstreamhost.cli.build_parser()"
    assert loaded_by(imports) == []


def test_processes_imports_nothing_else_from_streamhost():
    path = Path(streamhost.processes.__file__)
    assert not {name for name in imported_modules(path) if name.startswith("streamhost")}
