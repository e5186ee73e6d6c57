"""`oauth/errors.py`'s ErrorCode lists exactly the `error` codes the authorization server sends.

Clients branch on the exact string, so the codes are one Literal type instead of bare strings.
No type checker runs in this project's checks, so this test reads every place in oauth/ that
builds an error (with `ast`) and compares what it finds with the type: a code sent but not
listed (a typo, or a new code nobody decided on) fails, and so does a listed code nobody sends.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

from jean_memory.oauth.errors import ErrorCode

OAUTH = Path(__file__).resolve().parents[1] / "src" / "jean_memory" / "oauth"

#: Callables that take an error code, and the position of that argument.
BUILDERS = {"OAuthError": 0, "ClientMetadataError": 0, "_error_redirect": 1}


def codes_sent(folder: Path) -> tuple[set[str], list[str]]:
    """The literal codes passed to the builders (or annotated ErrorCode), and every argument
    that is neither a literal nor a code handed on from a caught error (`exc.error`)."""
    found: set[str] = set()
    unexplained: list[str] = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.AnnAssign) and ast.unparse(node.annotation) == "ErrorCode":
                argument = node.value
            elif isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                position = BUILDERS.get(name or "")
                if position is None or len(node.args) <= position:
                    continue
                argument = node.args[position]
            else:
                continue
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found.add(argument.value)
            elif argument is None or ast.unparse(argument) != "exc.error":
                unexplained.append(f"{path.name}:{node.lineno}")
    return found, unexplained


def test_error_code_lists_exactly_the_codes_the_server_sends():
    found, unexplained = codes_sent(OAUTH)
    assert not unexplained, f"error codes that are not literals: {unexplained}"
    assert found == set(get_args(ErrorCode))


def test_the_reader_finds_a_code_outside_the_type(tmp_path):
    """The check itself: a builder with a code the type does not list is seen."""
    (tmp_path / "bad.py").write_text(
        'raise OAuthError("invalid_requets", "typo")\nself._error_redirect(uri, "access_denied", "no", state)\n'
        "OAuthError(code, 'from a variable')\n",
        encoding="utf-8",
    )
    found, unexplained = codes_sent(tmp_path)
    assert found == {"invalid_requets", "access_denied"}
    assert unexplained == ["bad.py:3"]
    assert not found <= set(get_args(ErrorCode))
