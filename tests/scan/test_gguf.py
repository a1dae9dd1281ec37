"""GGUF: real files from the gguf package (llama.cpp's writer); chat templates checked."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from format_kit import reasons, scan_file

from tensorfile.pickles import Verdict
from tensorfile.scan import FormatLimits
from tensorfile.scan.gguf import read_gguf

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

#: Qwen2-style ChatML template, as real GGUF files carry it (namespace, loops, filters).
CHATML = (
    "{%- set ns = namespace(system=false) %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{%- set ns.system = true %}{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message['content'] | trim + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
#: CVE-2024-34359 (llama-cpp-python rendered templates without a sandbox).
RCE = ("{{ self.__init__.__globals__.__builtins__.__import__('os')"
       ".system('touch CANARY') }}")


def write_gguf(path: Path, template: str | None = CHATML, **named: str) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_token_list(["<s>", "</s>", "hello", "world"])
    w.add_token_scores([0.0, 0.0, -1.0, -2.0])
    if template is not None:
        w.add_chat_template(template)
    for name, text in named.items():
        w.add_string(f"tokenizer.chat_template.{name}", text)
    w.add_tensor("tok_embd.weight", np.ones((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_real_gguf_with_a_plain_template_is_safe(tmp_path: Path) -> None:
    report = scan_file(write_gguf(tmp_path / "m.gguf"))
    assert report.format == "gguf" and report.verdict is Verdict.SAFE, reasons(report)
    assert [s.location for s in report.streams] == ["metadata", "tokenizer.chat_template"]
    # The reference reader agrees the file is whole.
    assert "tokenizer.chat_template" in gguf.GGUFReader(str(tmp_path / "m.gguf")).fields


def test_without_a_template_and_by_content_not_name(tmp_path: Path) -> None:
    report = scan_file(write_gguf(tmp_path / "weights.bin", template=None))
    assert report.format == "gguf" and report.verdict is Verdict.SAFE


@pytest.mark.parametrize(("template", "verdict"), [
    (RCE, Verdict.DANGEROUS),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", Verdict.DANGEROUS),
    ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", Verdict.DANGEROUS),
    ("{{ messages|attr('__cla' ~ 'ss__') }}", Verdict.DANGEROUS),
    ("{{ messages['_' ~ '_class_' ~ '_'] }}", Verdict.UNKNOWN),
    ("{{ lipsum }}", Verdict.UNKNOWN),
    ("{{ joiner() }}", Verdict.UNKNOWN),
    ("{{ x|attr(y) }}", Verdict.UNKNOWN),
    ("{% include 'other.jinja' %}", Verdict.UNKNOWN),
    ("{{ config.items() }}", Verdict.UNKNOWN),
    ("{{ request.application }}", Verdict.UNKNOWN),
    ("{{ namespace.__init__ }}", Verdict.DANGEROUS),
    ("{{ messages", Verdict.UNKNOWN),
])
def test_templates_beyond_plain_jinja(tmp_path: Path, template: str, verdict: Verdict) -> None:
    report = scan_file(write_gguf(tmp_path / "m.gguf", template))
    assert report.verdict is verdict, reasons(report)


def test_a_named_template_is_checked_too(tmp_path: Path) -> None:
    report = scan_file(write_gguf(tmp_path / "m.gguf", CHATML, tool_use=RCE))
    assert report.verdict is Verdict.DANGEROUS
    assert any(s.location == "tokenizer.chat_template.tool_use" and s.verdict is Verdict.DANGEROUS
               for s in report.streams)


def test_comments_and_raw_blocks_are_text(tmp_path: Path) -> None:
    template = "{# x.__class__ #}{% raw %}{{ x.__class__ }}{% endraw %}" + CHATML
    assert scan_file(write_gguf(tmp_path / "m.gguf", template)).verdict is Verdict.SAFE


def test_the_hostile_template_runs_under_an_unsandboxed_renderer(tmp_path: Path) -> None:
    """The oracle: rendered as llama-cpp-python < 0.2.72 rendered it (a plain
    jinja2 Environment, in a subprocess), the template creates the canary."""
    pytest.importorskip("jinja2")
    canary = tmp_path / "canary"
    path = write_gguf(tmp_path / "m.gguf", RCE.replace("CANARY", str(canary)))
    code = (
        "import sys, gguf, jinja2\n"
        "r = gguf.GGUFReader(sys.argv[1])\n"
        "f = r.fields['tokenizer.chat_template']\n"
        "t = bytes(f.parts[f.data[0]]).decode()\n"
        "jinja2.Environment().from_string(t).render(messages=[])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    assert canary.exists()
    assert scan_file(path).verdict is Verdict.DANGEROUS


def test_every_truncation_is_an_error_never_safe(tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "m.gguf").read_bytes()
    tensors_at = data.index(b"tok_embd.weight") - 8
    for n in range(0, tensors_at + 40):
        parts = read_gguf(data[:n], FormatLimits())
        assert parts[-1].verdict is Verdict.ERROR, n


def test_lengths_and_counts_past_the_file_or_the_limits(tmp_path: Path) -> None:
    data = bytearray(write_gguf(tmp_path / "m.gguf").read_bytes())
    huge_kv = data[:16] + struct.pack("<Q", 1 << 40) + data[24:]
    (part,) = read_gguf(bytes(huge_kv), FormatLimits())
    assert part.verdict is Verdict.ERROR and "metadata entries" in (part.error or "")
    # The first key's length claims 2**63 bytes: checked before anything is read.
    bad_len = data[:24] + struct.pack("<Q", 1 << 63) + data[32:]
    (part,) = read_gguf(bytes(bad_len), FormatLimits())
    assert "needs" in (part.error or "")
    # A template over the limit is refused, not read.
    parts = read_gguf(bytes(data), FormatLimits(max_template=10))
    assert parts[-1].verdict is Verdict.ERROR and "limit" in (parts[-1].error or "")
    bad_version = data[:4] + struct.pack("<I", 1) + data[8:]
    assert "version 1" in (read_gguf(bytes(bad_version), FormatLimits())[0].error or "")


def test_a_payload_before_a_truncation_is_still_named(tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "m.gguf", RCE).read_bytes()
    cut = data.index(b"tok_embd.weight") + 4
    verdicts = [p.verdict for p in read_gguf(data[:cut], FormatLimits())]
    assert Verdict.DANGEROUS in verdicts and verdicts[-1] is Verdict.ERROR


def test_big_endian_files_are_read(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(str(tmp_path / "be.gguf"), "llama",
                        endianess=gguf.GGUFEndian.BIG)
    w.add_chat_template(RCE)
    w.add_tensor("t", np.ones(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert scan_file(tmp_path / "be.gguf").verdict is Verdict.DANGEROUS


def test_the_json_report_names_the_template(tmp_path: Path) -> None:
    from tensorfile.pickles import scan

    out = scan(write_gguf(tmp_path / "m.gguf", RCE)).to_dict()
    text = json.dumps(out)
    assert "tokenizer.chat_template" in text and out["exit_code"] == 1
