"""Chat templates in tokenizer configs and .jinja files; plain data stays not-pickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from format_kit import reasons, scan_file

from tensorfile.pickles import Verdict

#: Llama 3.1's template in outline: namespace, loops, tests, string filters.
LLAMA = (
    "{{- bos_token }}{%- set ns = namespace(found=false) %}"
    "{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}"
    "{%- for message in messages %}{%- if message.role == 'system' %}"
    "{%- set system_message = message['content']|trim %}{%- endif %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>' }}"
    "{%- endif %}"
)
HOSTILE = "{{ ''.__class__.__mro__[1].__subclasses__() }}"


def config(path: Path, **extra: object) -> Path:
    path.write_text(json.dumps({"bos_token": "<s>", "model_max_length": 4096, **extra}))
    return path


def test_a_plain_template_is_safe_and_a_config_without_one_is_data(tmp_path: Path) -> None:
    report = scan_file(config(tmp_path / "tokenizer_config.json", chat_template=LLAMA))
    assert report.format == "chat-template" and report.verdict is Verdict.SAFE, reasons(report)
    report = scan_file(config(tmp_path / "tokenizer_config.json"))
    assert report.format == "not-pickle" and report.verdict is Verdict.SAFE
    (tmp_path / "vocab.json").write_text(json.dumps({"hello": 0, "world": 1}))
    assert scan_file(tmp_path / "vocab.json").format == "not-pickle"


@pytest.mark.parametrize("name", ["tokenizer_config.json", "other.json"])
def test_a_hostile_template_is_found(tmp_path: Path, name: str) -> None:
    report = scan_file(config(tmp_path / name, chat_template=HOSTILE))
    assert report.verdict is Verdict.DANGEROUS and "__class__" in reasons(report)[0]


def test_named_templates_and_jinja_files(tmp_path: Path) -> None:
    listed = [{"name": "default", "template": LLAMA}, {"name": "rag", "template": HOSTILE}]
    report = scan_file(config(tmp_path / "tokenizer_config.json", chat_template=listed))
    assert report.verdict is Verdict.DANGEROUS
    assert [s.location for s in report.streams] == ["chat_template[default]",
                                                    "chat_template[rag]"]
    (tmp_path / "chat_template.jinja").write_text(LLAMA)
    assert scan_file(tmp_path / "chat_template.jinja").verdict is Verdict.SAFE
    (tmp_path / "chat_template.jinja").write_text(HOSTILE)
    assert scan_file(tmp_path / "chat_template.jinja").verdict is Verdict.DANGEROUS


def test_broken_configs(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": ')
    assert scan_file(tmp_path / "tokenizer_config.json").verdict is Verdict.ERROR
    (tmp_path / "tokenizer_config.json").write_text("[" * 200_000)
    assert scan_file(tmp_path / "tokenizer_config.json").verdict is Verdict.ERROR
    # Looked like a config by content only, but is not JSON: plain data.
    (tmp_path / "notes.txt").write_text('{"chat_template" is a key')
    assert scan_file(tmp_path / "notes.txt").verdict is Verdict.SAFE
