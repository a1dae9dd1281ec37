"""SARIF 2.1.0 from ``scan --format sarif`` and ``check --format sarif``, validated
against the official schema (``../shared/schemas``; skipped where it is absent)."""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

#: ``../shared`` beside the checkout (TENSORFILE_SHARED names it elsewhere, e.g. from a worktree).
SHARED = Path(os.environ.get("TENSORFILE_SHARED",
                             Path(__file__).resolve().parents[2] / ".." / "shared"))
SCHEMA = SHARED / "schemas" / "sarif-schema-2.1.0.json"
OS_SYSTEM = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."
ONE_LINE = 'allow."argparse.Namespace" = "Lightning hparams"\n'
RUNNER_ONLY = pytest.mark.parametrize("cli", ["runner"], indirect=True)


#: RFC 3986 characters of a URI reference (jsonschema checks "format": "uri" and
#: "uri-reference" only when an optional package is installed: checked here instead).
URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")


def _check_uris(node: Any, in_bases: bool = False) -> None:
    """Every ``uri`` is an RFC 3986 reference; those with a ``uriBaseId`` are relative,
    the bases themselves absolute and ending in ``/`` (as SARIF 2.1.0 says)."""
    if isinstance(node, dict):
        uri = node.get("uri")
        if isinstance(uri, str):
            assert URI_CHARS.fullmatch(uri), uri
            if in_bases:
                assert urlsplit(uri).scheme and uri.endswith("/"), uri
            if "uriBaseId" in node:
                assert urlsplit(uri).scheme == "", uri
        for k, v in node.items():
            _check_uris(v, in_bases or k == "originalUriBaseIds")
    elif isinstance(node, list):
        for v in node:
            _check_uris(v, in_bases)


def validate(log: dict[str, Any]) -> None:
    """The SARIF schema where jsonschema and the schema file are there (the test
    extra, ../shared), then the cross-references the schema cannot express. The
    numpy-only core run has no jsonschema: the rest of each test still runs."""
    _check_uris(log)
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is not None and SCHEMA.is_file():
        schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
        jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(log)
    elif jsonschema is not None:
        pytest.skip(f"no SARIF schema at {SCHEMA}")
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        for loc in result["locations"]:
            art = loc["physicalLocation"]["artifactLocation"]
            assert run["artifacts"][art["index"]]["location"]["uri"] == art["uri"]


@pytest.fixture
def model(tmp_path: Path, lightning_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(lightning_ckpt, folder / "last.ckpt")
    (folder / "evil.pkl").write_bytes(OS_SYSTEM)
    # The same checkpoint with its entries deflated: offsets count in the inflated member.
    with zipfile.ZipFile(lightning_ckpt) as src, zipfile.ZipFile(
            folder / "deflated.ckpt", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    return folder


def _results(log: dict[str, Any], uri: str) -> list[dict[str, Any]]:
    return [r for r in log["runs"][0]["results"]
            if r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == uri]


def test_scan_sarif_validates_and_points_at_the_bytes(cli: Any, model: Path) -> None:
    run = cli(["scan", "model", "--format", "sarif"])
    assert run.code == 1, run.stderr
    log = json.loads(run.stdout)
    validate(log)
    assert log["runs"][0]["invocations"][0]["exitCode"] == 1
    fingerprints = [r["partialFingerprints"]["tensorfile/v1"] for r in log["runs"][0]["results"]]
    assert len(set(fingerprints)) == len(fingerprints)
    again = json.loads(cli(["scan", "model", "--format", "sarif"]).stdout)
    assert [r["partialFingerprints"] for r in again["runs"][0]["results"]] == [
        r["partialFingerprints"] for r in log["runs"][0]["results"]]
    assert log["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"] == model.parent.as_uri() + "/"
    # A raw pickle: the offset is the file's own.
    evil = _results(log, "model/evil.pkl")  # the import, and the call
    assert [(r["ruleId"], r["level"]) for r in evil] == [("TF001", "error")] * 2
    at = [r["locations"][0]["physicalLocation"]["region"]["byteOffset"] for r in evil]
    assert OS_SYSTEM[at[0]:].startswith(b"cos\nsystem\n") and OS_SYSTEM[at[1]:at[1] + 1] == b"R"
    # torch.save stores its entries: the offset is still the file's own.
    stored = _results(log, "model/last.ckpt")
    assert {r["ruleId"] for r in stored} == {"TF002"} and len(stored) == 3
    data = (model / "last.ckpt").read_bytes()
    first = min(r["locations"][0]["physicalLocation"]["region"]["byteOffset"] for r in stored)
    assert data[first:].startswith(b"cargparse\nNamespace\n")
    # Deflated: the offset is given in the member, an artifact nested in the file.
    deflated = _results(log, "model/deflated.ckpt")
    assert deflated and all(r["locations"][0]["physicalLocation"]["region"] == {"startLine": 1}
                            for r in deflated)
    related = min((r["relatedLocations"][0]["physicalLocation"] for r in deflated),
                  key=lambda p: p["region"]["byteOffset"])
    member = related["artifactLocation"]["uri"]
    nested = log["runs"][0]["artifacts"][related["artifactLocation"]["index"]]
    parent = log["runs"][0]["artifacts"][nested["parentIndex"]]
    assert parent["location"]["uri"] == "model/deflated.ckpt"
    with zipfile.ZipFile(model / "deflated.ckpt") as z:
        content = z.read(member)
    assert content[related["region"]["byteOffset"]:].startswith(b"cargparse\nNamespace\n")


def test_check_sarif_with_policy(cli: Any, model: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (model / "evil.pkl").unlink()
    (model / "tensorfile.toml").write_text(ONE_LINE)
    run = cli(["check", "model", "--format", "sarif"])
    assert run.code == 0, run.stdout
    log = json.loads(run.stdout)
    validate(log)
    results = log["runs"][0]["results"]
    assert results and {r["ruleId"] for r in results} == {"TF006"}
    assert {r["level"] for r in results} == {"note"}
    # Paths are relative to the working folder (a CI job's checkout: code scanning reads
    # them from the repository's root), not to the model folder checked.
    assert {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in results} == {"model/last.ckpt", "model/deflated.ckpt"}
    assert log["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.as_uri() + "/"
    # A model outside the working folder: absolute file: URIs, no base id.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    log = json.loads(cli(["check", str(model), "--format", "sarif"]).stdout)
    validate(log)
    locations = [r["locations"][0]["physicalLocation"]["artifactLocation"]
                 for r in log["runs"][0]["results"]]
    assert {loc["uri"] for loc in locations} == {(model / "last.ckpt").as_uri(),
                                                (model / "deflated.ckpt").as_uri()}
    assert not any("uriBaseId" in loc for loc in locations)


@RUNNER_ONLY
def test_check_sarif_file_beside_text(cli: Any, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.sarif"
    run = cli(["check", "model", "--no-policy", "--sarif-file", str(out)])
    assert run.code == 1 and "FAIL TF001 evil.pkl" in run.stdout
    log = json.loads(out.read_text())
    validate(log)
    by_rule = {r["ruleId"] for r in log["runs"][0]["results"]}
    assert by_rule == {"TF001", "TF002"}
    assert all(r["level"] == "error" for r in log["runs"][0]["results"])


@RUNNER_ONLY
def test_model_level_findings_and_skips_validate(cli: Any, model: Path, tmp_path: Path) -> None:
    (model / "evil.pkl").unlink()
    (model / "link").symlink_to(tmp_path, target_is_directory=True)
    (model / "tensorfile.toml").write_text(ONE_LINE + "[limits]\nmax-total-size = 10\n")
    run = cli(["check", "model", "--format", "sarif"])
    log = json.loads(run.stdout)
    validate(log)
    rules = {r["ruleId"]: r for r in log["runs"][0]["results"]}
    assert {"TF004", "TF102", "TF006"} <= set(rules)
    assert rules["TF102"]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "model"
    assert run.code == 1


def test_rule_ids_are_stable() -> None:
    from tensorfile.check import RULES

    assert {r: RULES[r].name for r in RULES} == {
        "TF001": "dangerous-pickle", "TF002": "unknown-pickle", "TF003": "unreadable",
        "TF004": "skipped-path", "TF005": "not-assessed", "TF006": "allowed-by-policy",
        "TF101": "verification-failed", "TF102": "bound-exceeded", "TF103": "invalid-index"}


@RUNNER_ONLY
def test_a_colon_in_a_file_name_is_no_uri_scheme(cli: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "colon"
    folder.mkdir()
    (folder / "step:1.pkl").write_bytes(OS_SYSTEM)  # "step:1.pkl" would read as scheme "step"
    run = cli(["check", "colon", "--no-policy", "--format", "sarif"])
    assert run.code == 1
    log = json.loads(run.stdout)
    validate(log)
    uris = [loc["physicalLocation"]["artifactLocation"]["uri"]
            for r in log["runs"][0]["results"] for loc in r["locations"]]
    assert uris and all(urlsplit(u).scheme == "" and unquote(u) == "colon/step:1.pkl"
                        for u in uris)


@RUNNER_ONLY
def test_a_file_name_that_is_not_utf8(cli: Any, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux file names are bytes: one that is not UTF-8 is percent-encoded byte for byte
    in the URI and shown with U+FFFD in messages; the log stays valid UTF-8."""
    folder = tmp_path / "bytes"
    folder.mkdir()
    try:
        Path(os.fsdecode(os.fsencode(folder) + b"/\xffbad #1.pkl")).write_bytes(OS_SYSTEM)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses a name that is not UTF-8")
    out = tmp_path / "out.sarif"
    monkeypatch.chdir(tmp_path)
    run = cli(["check", "bytes", "--no-policy", "--sarif-file", str(out), "--quiet"])
    assert run.code == 1, run.stderr
    log = json.loads(out.read_bytes().decode("utf-8"))  # strict: no raw byte in the log
    validate(log)
    results = log["runs"][0]["results"]
    assert {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in results} == {"bytes/%FFbad%20%231.pkl"}
    assert all(r["message"]["text"].startswith("\ufffdbad #1.pkl: dangerous") for r in results)
    run = cli(["scan", "bytes", "--format", "sarif"])
    assert run.code == 1
    validate(json.loads(run.stdout))


@RUNNER_ONLY
@pytest.mark.parametrize("command", ["scan", "check"])
def test_json_wins_over_format_sarif(cli: Any, model: Path, command: str,
                                     json_of: Any) -> None:
    """--json with --format sarif prints the JSON envelope, for scan as for check."""
    run = cli([command, "model", "--json", "--format", "sarif"])
    assert json_of(run, command, 1)
