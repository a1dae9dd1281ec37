"""The policy file of ``tensorfile check`` and the scanner's ``extra_allowed`` (library level)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tensorfile.check import Policy, check, find_policy, load_policy
from tensorfile.errors import PolicyError
from tensorfile.pickles import Verdict, scan

# A protocol-2 pickle of argparse.Namespace(lr=1): GLOBAL, NEWOBJ, BUILD with a dict.
NAMESPACE = (b"\x80\x02cargparse\nNamespace\nq\x00)\x81q\x01}q\x02X\x02\x00\x00\x00lrq\x03"
             b"K\x01sb.")
ALLOW = {"argparse.Namespace": "hparams"}


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_extra_allowed_turns_unknown_into_allowed_uses(tmp_path: Path) -> None:
    path = _write(tmp_path, "ns.pkl", NAMESPACE)
    plain = scan(path).files[0]
    assert plain.verdict is Verdict.UNKNOWN
    allowed = scan(path, extra_allowed=ALLOW).files[0]
    assert allowed.verdict is Verdict.SAFE
    found = [(f.opcode, f.verdict, f.reason) for _, f in allowed.findings]
    assert found == [(op, Verdict.SAFE, "allowed by policy: hparams")
                     for op in ("GLOBAL", "NEWOBJ", "BUILD")]
    assert allowed.streams[0].globals == ["argparse.Namespace"]
    # check() reports it as allowed, never safe.
    report = check(path, Policy(allow=ALLOW))
    (status,) = report.files
    assert (status.status, status.label) == ("allowed", "allowed by policy (hparams)")
    assert report.exit_code == 0 and check(path).exit_code == 1


def test_extra_allowed_never_covers_gadgets_or_monkey_patching(tmp_path: Path) -> None:
    # os.system allowed by a (hand-made, unvalidated) mapping stays dangerous.
    evil = _write(tmp_path, "evil.pkl", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.")
    assert scan(evil, extra_allowed={"os.system": "no"}).files[0].verdict is Verdict.DANGEROUS
    # BUILD on the class itself (not on an instance it made) is monkey-patching.
    patch = _write(tmp_path, "patch.pkl",
                   b"\x80\x02cargparse\nNamespace\nq\x00}X\x01\x00\x00\x00xK\x01sb.")
    report = scan(patch, extra_allowed=ALLOW).files[0]
    assert report.verdict is Verdict.DANGEROUS
    # A name built on the stack (not literal text) is never matched.
    computed = _write(tmp_path, "computed.pkl",
                      b"\x80\x04\x8c\x08argparse\x8c\x04Name\x8c\x05space\x93.")
    assert scan(computed, extra_allowed=ALLOW).files[0].verdict is not Verdict.SAFE


def test_lightning_2_attribute_dict_hparams(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning 2.x keeps save_hyperparameters() as its AttributeDict (a dict subclass:
    NEWOBJ then SETITEMS on the new object); one allow line covers it, as for Namespace.
    Pickled here from a class of the same module, name and base as Lightning's."""
    import pickle
    import pickletools
    import types

    module = "lightning.fabric.utilities.data"
    attribute_dict = type("AttributeDict", (dict,), {"__module__": module})
    for name in ("lightning", "lightning.fabric", "lightning.fabric.utilities", module):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setattr(sys.modules[module], "AttributeDict", attribute_dict, raising=False)
    data = pickle.dumps({"hyper_parameters": attribute_dict(lr=0.1, name="run")}, protocol=2)
    ops = [op.name for op, _, _ in pickletools.genops(data)]
    assert "NEWOBJ" in ops and "SETITEMS" in ops
    path = _write(tmp_path, "hparams.pkl", data)
    assert scan(path).files[0].verdict is Verdict.UNKNOWN
    allow = {f"{module}.AttributeDict": "Lightning hparams"}
    report = check(path, Policy(allow=allow))
    assert report.exit_code == 0, [f.message for f in report.findings]
    assert report.files[0].label == "allowed by policy (Lightning hparams)"


def _policy(tmp_path: Path, text: str, name: str = "tensorfile.toml") -> Policy:
    path = tmp_path / name
    path.write_text(text)
    return load_policy(path)


def test_full_policy_parses(tmp_path: Path) -> None:
    p = _policy(tmp_path, '''
fail-on = ["dangerous", "unknown", "not-assessed"]
ignore = ["*.md", "logs/*"]
follow-symlinks = true

[allow]
"argparse.Namespace" = "Lightning hparams"
omegaconf.dictconfig.DictConfig = "Hydra config"

[limits]
max-file-size = "2GiB"
max-total-size = "1.5TB"
max-files = 10
max-inflate = "1MiB"
max-depth = 4

[trust]
keys = ["keys/a.pub", "keys/b.pub"]
cert-roots = ["ca.pem"]
trusted-root = "trusted_root.json"
keyless = [{identity = "ci@example.com", issuer = "https://accounts.google.com"}]
signature = "sig/model.sig"
allow-extra-files = true
'''.replace('"1.5TB"', '"15TB"'))
    assert p.allow == {"argparse.Namespace": "Lightning hparams",
                       "omegaconf.dictconfig.DictConfig": "Hydra config"}
    assert p.fail_on == {"dangerous", "unknown", "not-assessed"}
    assert p.ignores("README.md") and p.ignores("sub/notes.md") and p.ignores("logs/a/b.txt")
    assert not p.ignores("model.safetensors") and not p.ignores("x/logs/a")
    assert p.follow_symlinks
    b = p.bounds
    assert (b.max_file_size, b.max_total_size, b.max_files) == (2 << 30, 15 * 10**12, 10)
    assert (b.scan.max_inflate, b.scan.max_depth, b.scan.max_streams) == (1 << 20, 4, 10_000)
    t = p.trust
    assert t.keys == (tmp_path / "keys/a.pub", tmp_path / "keys/b.pub")
    assert t.cert_roots == (tmp_path / "ca.pem",)
    assert t.trusted_root == tmp_path / "trusted_root.json"
    assert [(k.identity, k.issuer) for k in t.keyless] == [
        ("ci@example.com", "https://accounts.google.com")]
    assert t.signature == tmp_path / "sig/model.sig" and t.allow_extra_files and t.required
    assert Policy().trust.required is False and Policy().fail_on >= {"dangerous", "error"}


@pytest.mark.parametrize(("text", "message"), [
    ("colour = 1\n", ":1: colour: unknown key"),
    ('allow."argparse.Namespace" = "x"\n\n[trust]\nkey = "a.pub"\n', ":4: trust.key: unknown key"),
    ("[limits]\nmax-file-size = 1\n\nmax-size = 2\n", ":4: limits.max-size: unknown key"),
    ('allow."argparse.Namespace" = ""\n', 'allow.argparse.Namespace: needs a reason'),
    ('allow."argparse.Namespace" = 3\n', "needs a reason"),
    ('allow."builtins.eval" = "why not"\n', "cannot be allowed: it can never be allowed"),
    ('allow."torch._utils._rebuild_tensor_v2" = "x"\n', "on the built-in allowlist already"),
    ('allow."not a name" = "x"\n', "not a module.name"),
    ('fail-on = ["dangerous", "sometimes"]\n', "unknown verdict 'sometimes'"),
    ('fail-on = ["unknown"]\n', "must include 'dangerous'"),
    ('fail-on = "dangerous"\n', "fail-on: must be a list"),
    ("[limits]\nmax-file-size = \"12 parsecs\"\n", "is not a size"),
    ("[limits]\nmax-files = -1\n", "is not a size"),
    ("follow-symlinks = 1\n", "must be true or false"),
    ('[trust]\nkeyless = [{identity = "a"}]\ntrusted-root = "t.json"\n', "identity and issuer"),
    ('[trust]\nkeyless = [{identity = "a", issuer = "b"}]\n', "go together"),
    ('[trust]\npins = "p"\nkeys = ["k"]\n', "pins check no signature"),
    ('[trust]\nkeyless = [{identity = "a", issuer = "b", url = 1}]\ntrusted-root = "t"\n',
     "trust.keyless.url: unknown key"),
    ("allow = [\n", "not valid TOML"),
    # Hostile nesting: tomllib recurses into arrays and inline tables, the reader into
    # dotted allow keys; both are errors, not a RecursionError.
    ("a = " + "[" * 100_000 + "\n", "nested too deeply"),
    ("a = " + "{b = " * 50_000 + "\n", "nested too deeply"),
    # Under the parsers' own limit (tomli 2.5 refuses over 1000 parts), over ours.
    ("allow." + ".".join(["a"] * 900) + ' = "r"\n', "allow.a.a.a...: a global name has at most"),
])
def test_strict_errors_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        _policy(tmp_path, text)
    assert str(info.value).startswith(str(tmp_path / "tensorfile.toml"))
    assert message in str(info.value)


def test_a_key_deeper_than_the_parser_takes_is_a_policy_error(tmp_path: Path) -> None:
    """3000 dotted parts: Python 3.11+'s tomllib parses it (then the reader's
    bound refuses it); tomli 2.5, the backport on 3.10, refuses it itself with a
    RecursionError. Either way a PolicyError naming the file, never a crash."""
    with pytest.raises(PolicyError) as info:
        _policy(tmp_path, "allow." + ".".join(["a"] * 3000) + ' = "r"\n')
    text = str(info.value)
    assert text.startswith(str(tmp_path / "tensorfile.toml"))
    assert "a global name has at most" in text or "nested too deeply" in text


def test_pyproject_table(tmp_path: Path) -> None:
    p = _policy(tmp_path, '[tool.ruff]\nline-length = 100\n\n[tool.tensorfile]\n'
                'allow."argparse.Namespace" = "hp"\n', "pyproject.toml")
    assert p.allow == {"argparse.Namespace": "hp"}
    assert p.source == f"{tmp_path / 'pyproject.toml'} [tool.tensorfile]"
    with pytest.raises(PolicyError, match=r"pyproject.toml:5: tool.tensorfile.extra: unknown"):
        _policy(tmp_path, '[tool.ruff]\nline-length = 100\n\n[tool.tensorfile]\nextra = 1\n',
                "pyproject.toml")
    with pytest.raises(PolicyError, match=r"no \[tool\.tensorfile\] table"):
        _policy(tmp_path, '[tool.ruff]\nline-length = 100\n', "pyproject.toml")


def test_find_policy_nearest_first(tmp_path: Path) -> None:
    model = tmp_path / "a" / "b" / "model"
    model.mkdir(parents=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    assert find_policy(model, cwd) is None
    (cwd / "tensorfile.toml").write_text("")
    assert find_policy(model, cwd) == cwd / "tensorfile.toml"  # the working folder's, last
    (tmp_path / "a" / "pyproject.toml").write_text("[tool.tensorfile]\n")
    assert find_policy(model, cwd) == tmp_path / "a" / "pyproject.toml"
    (tmp_path / "a" / "b" / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert find_policy(model, cwd) == tmp_path / "a" / "pyproject.toml"  # no table: skipped
    (tmp_path / "a" / "tensorfile.toml").write_text("")
    assert find_policy(model, cwd) == tmp_path / "a" / "tensorfile.toml"  # before pyproject
    (model / "tensorfile.toml").write_text("")
    assert find_policy(model / "weights.bin", cwd) == model / "tensorfile.toml"


def test_a_file_gone_after_listing_is_an_error_not_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file deleted between the folder listing and its ``stat`` (a race with another
    process) is reported as unreadable, and fails the run as an error (exit 2)."""
    from tensorfile.check import runner

    folder = tmp_path / "model"
    folder.mkdir()
    _write(folder, "a.pkl", NAMESPACE)
    _write(folder, "b.pkl", NAMESPACE)
    real_walk = runner._walk

    def walk_losing_b(path: Path, follow: bool) -> Iterator[object]:
        for item in real_walk(path, follow):
            if isinstance(item, Path) and item.name == "b.pkl":
                item.unlink()  # gone after _walk listed it and before check reads it
            yield item

    monkeypatch.setattr(runner, "_walk", walk_losing_b)
    report = check(folder, Policy(allow=ALLOW))
    by_path = {f.path: f.status for f in report.files}
    assert by_path == {"a.pkl": "allowed", "b.pkl": "error"}
    (gone,) = [f for f in report.findings if f.file == "b.pkl"]
    assert (gone.rule, gone.kind, gone.fails) == ("TF003", "error", True)
    assert "No such file" in gone.message and report.exit_code == 2


# -- spec/CHECK.md documents what the code knows ----------------------------------------
SPEC = Path(__file__).resolve().parents[2] / "spec" / "CHECK.md"


def _table(heading: str) -> list[list[str]]:
    """The rows of the first table under ``## heading`` (cells stripped, header and rule
    lines left out)."""
    text = SPEC.read_text(encoding="utf-8")
    section = text[text.index(f"## {heading}\n"):]
    section = section[:section.find("\n## ", 1)] if "\n## " in section[1:] else section
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_spec_documents_exactly_the_policy_keys() -> None:
    from tensorfile.check.policy import KEYS

    documented = [row[0].strip("`") for row in _table("Policy keys")]
    known = {f"{table}.{key}" if table else key for table, keys in KEYS.items() for key in keys}
    assert len(documented) == len(set(documented))
    assert set(documented) == known


def test_spec_rule_table_is_the_rules() -> None:
    from tensorfile.check import RULES

    assert {row[0]: (row[1], row[2]) for row in _table("Rule ids")} == {
        r.id: (r.name, r.short) for r in RULES.values()}
