"""Does a chat template stay within plain Jinja? (GGUF ``tokenizer.chat_template``,
``tokenizer_config.json``, ``chat_template.jinja``.)

llama.cpp-based servers, llama-cpp-python and transformers render a model's
chat template with a Jinja engine; where that engine is not sandboxed (as in
CVE-2024-34359), ``{{ ''.__class__.__mro__[1].__subclasses__() }}`` reaches
any Python function. A plain template only formats the messages: names,
attributes and items of the data it is given, filters, tests, loops, ``set``
and ``namespace()``.

The check reads the template's code (inside ``{{ }}``, ``{% %}``; comments
and ``{% raw %}`` blocks are text) with a small lexer: string literals,
names, ``.attribute`` and ``|filter``. It never renders or compiles the
template, and needs no Jinja package. The rules (spec/SCANNING.md, "Chat
templates"):

* ``dangerous``: a dunder name, attribute or string (``__class__``,
  ``'__glob' ~ 'als__'``'s ``'__glob'``), or an attribute that is a
  known way to code (``.os``, ``.popen``, ``.eval``, ``.subclasses``,
  ``.mro``, ``.func_globals``...);
* ``unknown``: what plain templates never need: the Jinja and Flask globals
  that hold module references (``cycler``, ``joiner``, ``lipsum``, ``self``,
  ``config``, ``request``, ``url_for``, ``get_flashed_messages``,
  ``namespace`` other than called), the ``attr`` filter (an attribute named
  by a computed string), ``import``/``include``/``extends``/``from`` (other
  templates), a private attribute (``._x``), a string literal that begins or
  ends with ``_`` (a piece of a dunder name), a block that is never closed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from tensorfile._report import Finding, Verdict

#: Attributes that are a known way to code (as bare names they could only be
#: the template's own variables: Jinja defines none). Words that are also
#: ordinary keys of a template's data (``ns.system``, ``x.open``) are left
#: out: reaching a module at all needs a dunder or a global flagged below.
_GADGETS: Final = frozenset({
    "os", "subprocess", "builtins", "importlib", "popen", "eval", "exec", "execfile",
    "import_module", "mro", "subclasses", "func_globals", "func_code", "f_globals",
    "f_locals", "f_back", "gi_frame", "gi_code", "cr_frame", "ag_frame", "tb_frame",
    "co_code", "im_func", "check_output", "getoutput", "run_path",
})
#: Globals of Jinja's default environment (and of Flask's) that a plain
#: template does not use: each holds functions whose module globals are a
#: step away.
_BEYOND_PLAIN: Final = frozenset({
    "cycler", "joiner", "lipsum", "self", "config", "request", "url_for",
    "get_flashed_messages", "session", "g", "dict_items",
})
_TAGS_READING_OTHERS: Final = frozenset({"import", "include", "extends", "from"})

_OPEN = re.compile(r"\{\{|\{%|\{#")
_RAW_END = re.compile(r"\{%-?\s*endraw\s*-?%\}")
_TOKEN = re.compile(r"""
      (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<close>-?\}\}|-?%\})
    | (?P<dot>\.\s*)(?P<attr>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<pipe>\|\s*)(?P<filter>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<call>\s*\()?
    | (?P<other>\s+|\d[\d_.eE]*|.)
""", re.VERBOSE | re.DOTALL)


def check_template(source: str, where: str) -> list[Finding]:
    """The findings of one template (none: plain Jinja). ``where`` names it in reasons."""
    findings: list[Finding] = []
    seen: set[tuple[Verdict, str]] = set()

    def flag(verdict: Verdict, reason: str, at: int) -> None:
        if (verdict, reason) not in seen:  # one finding per rule and name
            seen.add((verdict, reason))
            findings.append(Finding(verdict, f"{where}: {reason}", offset=at,
                                    global_name=None))

    pos = 0
    while True:
        m = _OPEN.search(source, pos)
        if m is None:
            return findings
        kind = m.group()
        if kind == "{#":
            end = source.find("#}", m.end())
            if end < 0:
                flag(Verdict.UNKNOWN, "a comment is never closed (the engine refuses "
                     "or reads it differently)", m.start())
                return findings
            pos = end + 2
            continue
        pos = _code(source, m.end(), kind, flag)
        if pos < 0:
            flag(Verdict.UNKNOWN, "a block is never closed (the engine refuses or reads "
                 "it differently)", m.start())
            return findings


def _code(source: str, pos: int, kind: str, flag: Callable[[Verdict, str, int], None]) -> int:
    """Check one ``{{ }}``/``{% %}`` block from ``pos``; where the text resumes (-1: unclosed)."""
    first = True
    while True:
        m = _TOKEN.match(source, pos)
        if m is None:
            return -1
        pos = m.end()
        at = m.start()
        if m.group("close") is not None:
            return pos
        text = m.group("str")
        if text is not None:
            body = text[1:-1]
            if "__" in body:
                flag(Verdict.DANGEROUS, f"string {text[:40]!s} names a dunder attribute, the way "
                     "from any object to the interpreter's internals", at)
            elif body.startswith("_") or body.endswith("_"):
                flag(Verdict.UNKNOWN, f"string {text[:40]!s} begins or ends with '_' (a piece "
                     "of a dunder name)", at)
            first = False
            continue
        name = m.group("attr") or m.group("filter") or m.group("name")
        if name is None:
            continue
        if name.startswith("__"):
            flag(Verdict.DANGEROUS, f"{name} reaches the interpreter's internals (module "
                 "globals, builtins, subclasses): a known way to any function", at)
        elif m.group("attr") is not None:
            if name in _GADGETS:
                flag(Verdict.DANGEROUS, f".{name}: a known way to run code or touch files", at)
            elif name.startswith("_"):
                flag(Verdict.UNKNOWN, f"private attribute .{name}", at)
        elif m.group("filter") is not None:
            if name == "attr":
                flag(Verdict.UNKNOWN, "the attr filter looks up an attribute by a computed "
                     "name", at)
        elif first and kind == "{%" and name == "raw":
            end = _RAW_END.search(source, pos)
            return -1 if end is None else end.end()
        elif first and kind == "{%" and name in _TAGS_READING_OTHERS:
            flag(Verdict.UNKNOWN, f"{{% {name} %}} reads another template", at)
        elif name in _BEYOND_PLAIN:
            flag(Verdict.UNKNOWN, f"{name}: a Jinja global that plain templates do not use "
                 "(its functions are a step from module globals)", at)
        elif name == "namespace" and m.group("call") is None:
            flag(Verdict.UNKNOWN, "namespace used other than called (namespace(...) holds "
                 "loop state; the class itself is a step from module globals)", at)
        first = False
