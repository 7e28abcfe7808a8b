"""The daemon's own settings (where data lives, which policy, which
interfaces), as opposed to the organisation's rules in the policy."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from policy.loader import PolicyError, line_of, plain

DEFAULT_DATA_DIR = Path(os.environ.get("CALLREC_DATA_DIR", "callrec-data"))


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = DEFAULT_DATA_DIR
    policy: Path | None = None
    interfaces: Annotated[list[str], Field(max_length=16)] = ["lo"]
    log_level: Annotated[str, Field(pattern="^(debug|info|warning|error)$")] = "info"


def load_config(path: Path) -> Config:
    """Read the config file; errors name file, line and field like policy errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(str(path), None, "", f"cannot read: {exc}") from None
    try:
        tree = YAML(typ="rt").load(text) or {}
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise PolicyError(str(path), mark.line + 1 if mark else None, "", f"not valid YAML: {exc.problem}") from None
    try:
        config = Config.model_validate(plain(tree))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        raise PolicyError(str(path), line_of(tree, loc), ".".join(map(str, loc)), err["msg"]) from None
    base = path.parent
    updates: dict[str, Path] = {}
    if not config.data_dir.is_absolute():
        updates["data_dir"] = base / config.data_dir
    if config.policy is not None and not config.policy.is_absolute():
        updates["policy"] = base / config.policy
    return config.model_copy(update=updates)
