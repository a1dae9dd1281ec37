"""Chat templates kept beside a model: ``tokenizer_config.json``, ``chat_template.json``,
``chat_template.jinja``.

transformers' ``apply_chat_template`` (and servers built on it) render the
template a tokenizer or processor config carries (``chat_template``: one
template, or a list of ``{"name", "template"}``); ``chat_template.jinja``
is the template alone. Each template gets the check GGUF templates get
(:mod:`._jinja`). The rest of these files is data: a config without a
template keeps the pickle scanner's ``not-pickle``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from tensorfile._format.strict_json import loads_strict
from tensorfile._report import StreamReport
from tensorfile.errors import MalformedModelError, ScanLimitError
from tensorfile.scan._base import FormatLimits, part, read_capped
from tensorfile.scan._jinja import check_template

_CONFIGS: Final = frozenset({"tokenizer_config.json", "chat_template.json",
                             "processor_config.json"})
_KEY: Final = b'"chat_template"'


class ChatTemplateAssessor:
    """Configs that carry a chat template (by name, or a JSON object naming one), and ``.jinja``."""

    format = "chat-template"

    def detect(self, head: bytes, name: str) -> bool:
        lower = name.lower()
        if lower in _CONFIGS or lower.endswith(".jinja"):
            return True
        return head.lstrip()[:1] == b"{" and _KEY in head

    def assess(self, path: Path, limits: FormatLimits) -> list[StreamReport]:
        cap = limits.max_template if path.name.lower().endswith(".jinja") else limits.max_json
        data = read_capped(path, cap, path.name)
        if path.name.lower().endswith(".jinja"):
            try:
                source = data.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedModelError(f"{path.name} is not UTF-8") from None
            return [part(path.name, check_template(source, path.name))]
        try:
            config = loads_strict(data, path.name, MalformedModelError)
        except RecursionError:
            raise ScanLimitError(f"{path.name} nests deeper than the JSON reader goes") from None
        except MalformedModelError:
            if path.name.lower() in _CONFIGS:
                raise
            return []  # only looked like JSON: the pickle scanner's report stands
        return [part(where, check_template(source, where)) for where, source in
                _templates(config, limits)]


def _templates(config: Any, limits: FormatLimits) -> list[tuple[str, str]]:
    if not isinstance(config, dict):
        return []
    value = config.get("chat_template")
    if isinstance(value, str):
        found = [("chat_template", value)]
    elif isinstance(value, list):
        found = [(f"chat_template[{item.get('name', i)!s}]", item["template"])
                 for i, item in enumerate(value)
                 if isinstance(item, dict) and isinstance(item.get("template"), str)]
    elif isinstance(value, dict):  # name -> template, as some processors write it
        found = [(f"chat_template[{k}]", v) for k, v in value.items() if isinstance(v, str)]
    else:
        return []
    for where, source in found:
        if len(source.encode("utf-8")) > limits.max_template:
            raise ScanLimitError(f"{where} is over the {limits.max_template:,}-byte limit "
                                 "for a template")
    return found
