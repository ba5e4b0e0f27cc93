"""The data flows one way: each module imports only the steps before it (checked with ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "digest"

# module -> the digest modules it may import. Joining steps is pipeline's job; cli sits on top.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "models": set(),
    "text": set(),
    "config": {"errors"},
    "project": {"errors"},
    "sources": {"errors", "models", "config", "text"},
    "store": {"errors"},
    "archive": {"errors", "models", "store"},
    "subscribers": {"errors", "models"},
    "selector": {"errors", "models", "config"},
    "schedule": {"errors", "models", "config"},
    "tokens": {"errors", "config"},
    "web": {"errors", "models", "config", "project", "tokens", "subscribers"},
    "render": {"errors", "models", "config", "project"},
    "inline": {"errors"},
    "message": {"errors", "models", "config", "tokens", "render"},
    "ledger": {"errors", "models", "store"},
    "sender": {"errors", "models", "config", "ledger"},
    "shards": {"errors"},
    "pipeline": {
        "errors",
        "models",
        "config",
        "sources",
        "archive",
        "selector",
        "subscribers",
        "tokens",
        "render",
        "inline",
        "message",
        "ledger",
        "sender",
        "shards",
        "schedule",
    },
    "cli": {
        "history",
        "errors",
        "models",
        "config",
        "project",
        "pipeline",
        "selector",
        "subscribers",
        "tokens",
        "web",
        "preview",
        "doctor",
        "schedule",
    },
    # A top-level app like cli: it shows what pipeline makes, so it may use pipeline's parts.
    "preview": {"errors", "models", "config", "project", "pipeline", "render", "subscribers"},
    # Also top-level: checks the setup with the parts a send uses, probing SMTP itself (async).
    "doctor": {
        "errors",
        "models",
        "config",
        "sources",
        "selector",
        "subscribers",
        "tokens",
        "render",
        "message",
        "sender",
        "pipeline",
        "web",
    },
    # Also top-level: past issues from the archive and the ledger, and their web pages.
    "history": {
        "errors",
        "models",
        "config",
        "project",
        "archive",
        "ledger",
        "render",
        "pipeline",
    },
    "__init__": set(),
    "__main__": {"cli"},
}


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(digest modules, top-level third-party or stdlib modules) a file imports."""
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "digest":
                ours.update(alias.name for alias in node.names)
            elif node.module.startswith("digest."):
                ours.add(node.module.split(".")[1])
            else:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("digest."):
                    ours.add(alias.name.split(".")[1])
                else:
                    others.add(alias.name.split(".")[0])
    return ours, others


MODULES = sorted(PACKAGE.glob("*.py"))


def test_every_module_has_an_import_rule() -> None:
    """A new module must be placed in the data flow before it can be imported."""
    assert {path.stem for path in MODULES} <= ALLOWED.keys()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_module_imports_only_earlier_steps(path: Path) -> None:
    """No step reaches forward or sideways into another step."""
    ours, _ = imports_of(path)
    assert ours <= ALLOWED[path.stem], f"{path.stem} imports {ours - ALLOWED[path.stem]}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_click_stays_in_the_cli_and_asyncio_at_the_edges(path: Path) -> None:
    """Only cli knows click; only sources, sender, doctor (its SMTP probe) and pipeline (to enter
    them) use asyncio."""
    _, others = imports_of(path)
    if path.stem != "cli":
        assert "click" not in others
    if path.stem not in {"sources", "sender", "doctor", "pipeline"}:
        assert "asyncio" not in others
