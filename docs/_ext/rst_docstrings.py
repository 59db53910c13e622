"""A griffe extension for the docs build: render alpaca-di's reST-flavoured docstrings.

alpaca-di's docstrings follow the Google style for sections (``Args:``,
``Raises:``, ``Attributes:``) but keep two reStructuredText habits that
Markdown does not understand:

* cross-reference roles such as ``:class:`~alpaca_di.errors.ConfigurationError```
  or ``:meth:`StreamHub.subscribe <alpaca_di.services.StreamHub.subscribe>```;
* literal blocks introduced by a line ending in ``::`` and indented below it.

This extension rewrites both before mkdocstrings renders a docstring: a role
becomes an *optional* cross-reference (a link when the target is documented on
the site, plain code otherwise, never a warning), and a literal block becomes a
fenced code block (``python`` when it parses as Python, ``text`` otherwise).
The source files are left untouched.

It is loaded by ``mkdocs.yml`` (``plugins.mkdocstrings...options.extensions``)
and is not part of the published site.
"""

from __future__ import annotations

import ast
import html
import re
import textwrap
from typing import Any

import griffe

__all__ = ["RstDocstrings"]

_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|meth|func|mod|attr|data|exc|obj|const):`(?P<body>[^`]+)`"
)
_EXPLICIT = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")
_CALLABLE_ROLES = frozenset({"meth", "func"})


def _resolve(obj: griffe.Object, target: str) -> str:
    """The full path of ``target`` as seen from ``obj``, or ``target`` itself."""
    head, _, rest = target.partition(".")
    try:
        resolved = obj.resolve(head)
    except Exception:  # griffe raises NameResolutionError, or alias errors
        return target
    return f"{resolved}.{rest}" if rest else resolved


def _role(obj: griffe.Object, match: re.Match[str]) -> str:
    role, body = match["role"], match["body"].strip()
    explicit = _EXPLICIT.match(body)
    if explicit:
        title, target = explicit["title"], explicit["target"].lstrip("~")
    elif body.startswith("~"):
        target = body[1:]
        title = target.rsplit(".", 1)[-1]
    else:
        title = target = body
    if role in _CALLABLE_ROLES and not title.endswith(")"):
        title += "()"
    if not target.startswith("alpaca_di."):
        target = _resolve(obj, target)
    code = f"<code>{html.escape(title)}</code>"
    if not target.startswith("alpaca_di"):
        return code  # outside the site: nothing to link to
    return f'<autoref identifier="{html.escape(target)}" optional>{code}</autoref>'


def _language(block: str) -> str:
    try:
        compile(block, "<docstring>", "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except (SyntaxError, ValueError):
        return "text"
    return "python"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _literal_blocks(text: str) -> str:
    """Turn ``Intro::`` + indented block into ``Intro:`` + a fenced block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    fenced = False
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced = not fenced
        if fenced or not stripped.endswith("::") or stripped.endswith(":::"):
            out.append(line)
            i += 1
            continue
        base = _indent(line)
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j == len(lines):
            out.append(line)
            i += 1
            continue
        if _indent(lines[j]) > base:
            k = j
            while k < len(lines) and (not lines[k].strip() or _indent(lines[k]) > base):
                k += 1
        elif i == 0:
            # A one-line summary ending in "::" and an unindented example below it:
            # not valid reST, but the intent is clear. The rest is the example.
            k = len(lines)
        else:
            out.append(line)
            i += 1
            continue
        while k > j and not lines[k - 1].strip():
            k -= 1
        block = textwrap.dedent("\n".join(lines[j:k]))
        intro = stripped[:-2].rstrip()
        pad = " " * base
        if intro:
            out.append(f"{pad}{intro}:")
            out.append("")
        out.append(f"{pad}```{_language(block)}")
        out.extend(f"{pad}{code}" if code else "" for code in block.split("\n"))
        out.append(f"{pad}```")
        i = k
    return "\n".join(out)


class RstDocstrings(griffe.Extension):
    """Rewrite reST roles and literal blocks of every docstring into Markdown."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring in place (once the object tree is complete)."""
        docstring = obj.docstring
        if docstring is None or getattr(docstring, "_rst_rewritten", False):
            return
        value = _literal_blocks(docstring.value)
        docstring.value = _ROLE.sub(lambda match: _role(obj, match), value)
        docstring._rst_rewritten = True  # type: ignore[attr-defined]
