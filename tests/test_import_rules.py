"""The floor plan holds: data flows one way, and each package is entered only by its front door.

packets → recorder → storage → access → web, with the wire formats and the policy below them
all; the announcer beside the recorder, writing proof of notice to storage from its service
adapter only; the `callrec` command on top.  Checked twice: on the source (every import
statement, so a rule broken inside a function is caught too) and at run time (what importing a
package really loads, so a rule broken through a third module is caught too).
"""
from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MAY_IMPORT: dict[str, frozenset[str]] = {
    "wire": frozenset(),
    "policy": frozenset({"wire"}),
    "recorder": frozenset({"wire", "policy"}),
    "storage": frozenset({"wire", "policy", "recorder"}),
    "announcer": frozenset({"wire", "policy", "storage"}),
    "access": frozenset({"wire", "policy", "storage"}),
    "web": frozenset({"wire", "policy", "storage", "access"}),
    "callrec": frozenset({"wire", "policy", "recorder", "storage", "announcer", "access", "web"}),
}
"""Which of our packages each package may import."""

NARROW: dict[tuple[str, str], frozenset[str]] = {
    ("storage", "recorder"): frozenset({"recorder.record"}),
}
"""Where a package may use only part of a lower one: storage sees the recorder's hand-over
contract, never its engine or its live `Call`."""

ANNOUNCER_ADAPTERS = frozenset({"announcer/service.py"})
"""The announcer's modules that may touch storage; the rest is its sans-I/O core."""


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).glob("*.py"))


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names, line) for every absolute import of ours in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((a.name, [], node.lineno) for a in node.names)
    return [item for item in found if item[0].split(".")[0] in MAY_IMPORT]


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_every_package_is_in_the_plan() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(MAY_IMPORT)


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_go_down_the_floor_plan_only(package: str) -> None:
    wrong = []
    for path in _modules(package):
        for module, _, line in _imports(path):
            target = module.split(".")[0]
            if target == package:
                continue
            narrow = NARROW.get((package, target))
            allowed = target in MAY_IMPORT[package] and (narrow is None or module in narrow)
            if package == "announcer" and target == "storage":
                allowed = allowed and str(path.relative_to(ROOT)) in ANNOUNCER_ADAPTERS
            if not allowed:
                wrong.append(f"{_where(path, line)} imports {module}")
    assert wrong == []


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_other_packages_use_only_the_public_modules_and_names(package: str) -> None:
    """A package's `__all__` names its public modules; a public module's `__all__` names what it
    offers.  Imports between packages stay inside both lists, so each package can change its
    inside without breaking another."""
    wrong = []
    for path in _modules(package):
        for module, names, line in _imports(path):
            target, _, rest = module.partition(".")
            if target == package:
                continue
            public_modules = importlib.import_module(target).__all__
            if not rest:
                wrong.extend(f"{_where(path, line)} imports {target}.{n}, not a public module"
                             for n in names if n not in public_modules)
                continue
            if rest.split(".")[0] not in public_modules:
                wrong.append(f"{_where(path, line)} imports {module}, not a public module of {target}")
                continue
            offered = getattr(importlib.import_module(module), "__all__", None)
            if offered is None:
                wrong.append(f"{module} declares no __all__")
                continue
            wrong.extend(f"{_where(path, line)} imports {module}.{n}, not in its __all__"
                         for n in names if n not in offered)
    assert wrong == []


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_every_public_module_declares_what_it_offers(package: str) -> None:
    missing = []
    for name in importlib.import_module(package).__all__:
        module = importlib.import_module(f"{package}.{name}")
        if not isinstance(getattr(module, "__all__", None), list):
            missing.append(module.__name__)
        else:
            missing.extend(f"{module.__name__}.{n}" for n in module.__all__ if not hasattr(module, n))
    assert missing == []


def _loaded_by(modules: list[str]) -> set[str]:
    """The modules a fresh interpreter holds after importing `modules`."""
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def _every_module(package: str) -> list[str]:
    return [f"{package}.{p.stem}" for p in _modules(package) if p.stem not in ("__init__", "__main__")]


def _ours(loaded: set[str], *packages: str) -> set[str]:
    return {m for m in loaded if m.split(".")[0] in packages}


def test_storage_loads_no_capture_stack_no_announcer_and_no_soundfile() -> None:
    loaded = _loaded_by(_every_module("storage"))
    assert _ours(loaded, "recorder") <= {"recorder", "recorder.record"}
    assert _ours(loaded, "announcer", "callrec") == set()
    assert "soundfile" not in loaded


def test_policy_loads_no_announcer_soundfile_or_numpy() -> None:
    loaded = _loaded_by(_every_module("policy"))
    assert _ours(loaded, "announcer", "recorder", "storage", "callrec") == set()
    assert {"soundfile", "numpy"} & loaded == set()


def test_wire_loads_nothing_else_of_ours() -> None:
    loaded = _loaded_by(_every_module("wire"))
    assert _ours(loaded, "policy", "recorder", "storage", "announcer", "callrec") == set()


def test_announcer_core_loads_no_storage() -> None:
    core = [m for m in _every_module("announcer")
            if f"{m.replace('.', '/')}.py" not in ANNOUNCER_ADAPTERS | {"announcer/make_default_announcement.py"}]
    loaded = _loaded_by(core)
    assert _ours(loaded, "storage", "recorder", "callrec") == set()


def test_every_error_of_ours_has_the_one_base() -> None:
    """The CLI catches CallrecError alone: an error class outside it would escape as a traceback."""
    from wire.errors import CallrecError

    strays = []
    for package in MAY_IMPORT:
        for name in _every_module(package):
            module = importlib.import_module(name)
            strays.extend(f"{name}.{attr}" for attr, value in vars(module).items()
                          if isinstance(value, type) and issubclass(value, BaseException)
                          and value.__module__ == name and not issubclass(value, CallrecError))
    assert strays == []


def test_access_loads_no_capture_stack_and_no_announcer() -> None:
    loaded = _loaded_by(_every_module("access"))
    assert _ours(loaded, "recorder") <= {"recorder", "recorder.record"}
    assert _ours(loaded, "announcer", "callrec") == set()
    assert "soundfile" not in loaded
