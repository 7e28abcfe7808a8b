"""The console's word table (web/i18n.py) against the templates and pages that use it.

A key used but missing shows the key itself on a page; a key written twice in the table silently
keeps only the later words, so one screen says what another screen's entry meant (two helpers
once both added "next_page": the search's "次の{n}件" became the ledger's "次へ")."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from web import i18n

WEB = Path(i18n.__file__).parent
_USED = re.compile(r'\bt\("([a-z_0-9]+)"\)')


def _table_keys() -> list[str]:
    tree = ast.parse((WEB / "i18n.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "_WORDS":
            assert isinstance(node.value, ast.Dict)
            return [k.value for k in node.value.keys if isinstance(k, ast.Constant)]
    raise AssertionError("web/i18n.py has no _WORDS table")


def test_no_key_is_written_twice() -> None:
    keys = _table_keys()
    assert len(keys) > 100
    assert sorted({k for k in keys if keys.count(k) > 1}) == []


def test_every_key_a_page_uses_has_its_words_in_both_languages() -> None:
    sources = [*(p for p in WEB.glob("*.py") if p.name != "i18n.py"), *(WEB / "templates").glob("*.html")]
    used = {key for path in sources for key in _USED.findall(path.read_text(encoding="utf-8"))}
    assert len(used) > 100
    assert sorted(used - set(_table_keys())) == []
    assert all(i18n.translate(key, "ja") and i18n.translate(key, "en") for key in used)
