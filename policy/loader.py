"""Reading policy files with errors that name the file, the line and the field.

ruamel.yaml keeps the position of every key, so a validation error found by
pydantic on a nested field can be reported at the line an administrator has to
edit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from wire.errors import CallrecError

from .schema import Policy

__all__ = ["PolicyError", "load_policy", "parse_policy", "read_yaml", "validate"]

M = TypeVar("M", bound=BaseModel)

MAX_POLICY_BYTES = 1 << 20


class PolicyError(CallrecError):
    """A policy file that cannot be used; the message is for the administrator."""

    def __init__(self, path: str, line: int | None, field: str, reason: str) -> None:
        self.path, self.line, self.field, self.reason = path, line, field, reason
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {field}: {reason}" if field else f"{where}: {reason}")


def line_of(tree: Any, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the deepest node of loc that the YAML tree has."""
    line: int | None = None
    node = tree
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            pos = node.lc.key(key)
            line = pos[0] + 1
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            pos = node.lc.item(key)
            line = pos[0] + 1
            node = node[key]
        else:
            break
    return line


def parse_yaml(text: str, path: str) -> CommentedMap:
    """A YAML mapping that remembers the line of every key."""
    try:
        tree = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise PolicyError(path, line, "", f"not valid YAML: {exc.problem or exc.context}") from None
    if tree is None:
        return CommentedMap()
    if not isinstance(tree, CommentedMap):
        raise PolicyError(path, 1, "", "the file must be a mapping of settings")
    return tree


def read_yaml(path: Path) -> CommentedMap:
    """A settings file read with bounds: one MiB of UTF-8 at most."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), None, "", f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(str(path), None, "", "file is larger than 1 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(str(path), None, "", "file is not UTF-8") from None
    return parse_yaml(text, str(path))


def validate(model: type[M], tree: Any, path: str, prefix: tuple[str, ...] = (), section: Any = None) -> M:
    """The model from (a section of) the tree; the first problem names
    the file, the line and the field."""
    try:
        return model.model_validate(plain(tree if section is None else section))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = prefix + tuple(err["loc"])
        raise PolicyError(path, line_of(tree, loc), ".".join(str(p) for p in loc), err["msg"]) from None


def parse_policy(text: str, path: str = "<policy>") -> Policy:
    """Validate policy text; raise PolicyError on the first problem."""
    return validate(Policy, parse_yaml(text, path), path)


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file."""
    return validate(Policy, read_yaml(path), str(path))


def plain(node: Any) -> Any:
    """Turn ruamel's round-trip containers into plain ones for pydantic."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node
