"""``tensorfile check``: scan, validate and verify by a policy, in process and as a subprocess."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

#: The one-line policy entry of the issue's "done when".
ONE_LINE = 'allow."argparse.Namespace" = "Lightning hparams saved by save_hyperparameters()"\n'
#: A pickle calling os.system (written as bytes, never loaded).
OS_SYSTEM = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."
#: Most tests run in process only: the console script is exercised by the first three
#: (a subprocess costs seconds on a loaded CI machine).
RUNNER_ONLY = pytest.mark.parametrize("cli", ["runner"], indirect=True)


@pytest.fixture
def model(tmp_path: Path, lightning_ckpt: Path, st_file: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(lightning_ckpt, folder / "last.ckpt")
    shutil.copy(st_file, folder / "model.safetensors")
    (folder / "config.json").write_text('{"hidden": 4}')
    return folder


@pytest.fixture(autouse=True)
def _no_stray_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the test's own folder, so the repository's files are never found."""
    monkeypatch.chdir(tmp_path)


def test_lightning_namespace_passes_with_a_one_line_policy(cli: Any, model: Path) -> None:
    (model / "tensorfile.toml").write_text(ONE_LINE)
    run = cli(["check", str(model)])
    assert run.code == 0, run.stdout + run.stderr
    assert ("last.ckpt: allowed by policy (Lightning hparams saved by save_hyperparameters())"
            in run.stdout)
    assert "last.ckpt: safe" not in run.stdout
    assert run.stdout.splitlines()[-1] == "4 files (1 allowed, 3 safe); 0 failing findings: passed"


def test_without_the_entry_it_fails(cli: Any, model: Path, json_of: Callable[..., Any]) -> None:
    run = cli(["check", str(model)])
    assert run.code == 1
    assert "last.ckpt: unknown" in run.stdout
    assert "FAIL TF002 last.ckpt at byte" in run.stdout and "argparse.Namespace" in run.stdout
    result = json_of(cli(["check", str(model), "--json"]), "check", 1)
    assert result["passed"] is False and result["policy"]["source"] is None
    failing = [f for f in result["findings"] if f["fails"]]
    assert {f["rule"] for f in failing} == {"TF002"}
    assert {f["global"] for f in failing} == {"argparse.Namespace", None}  # BUILD names no global


@RUNNER_ONLY
def test_json_report_names_the_reason_and_never_safe(
        cli: Any, model: Path, json_of: Callable[..., Any]) -> None:
    (model / "tensorfile.toml").write_text(ONE_LINE)
    result = json_of(cli(["check", str(model), "--format", "json"]), "check", 0)
    files = {f["path"]: f for f in result["files"]}
    ckpt = files["last.ckpt"]
    assert ckpt["status"] == "allowed" and ckpt["verdict"] == "safe"
    assert ckpt["label"].startswith("allowed by policy (Lightning hparams")
    assert ckpt["allowed"] == {"argparse.Namespace":
                               "Lightning hparams saved by save_hyperparameters()"}
    assert files["model.safetensors"]["status"] == "safe"
    assert files["model.safetensors"]["format"] == "safetensors"
    allowed = [f for f in result["findings"] if f["rule"] == "TF006"]
    assert allowed and all(not f["fails"] and f["kind"] == "allowed" for f in allowed)
    assert result["policy"]["source"] == str(model / "tensorfile.toml")
    assert result["verification"] == {"status": "not-required", "report": None, "errors": []}


@RUNNER_ONLY
def test_policy_in_pyproject_found_from_the_target_up(cli: Any, model: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.tensorfile]\n' + ONE_LINE)
    elsewhere = tmp_path.parent / f"{tmp_path.name}-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = cli(["check", str(model)])
    assert run.code == 0, run.stdout
    assert f"policy: {tmp_path / 'pyproject.toml'} [tool.tensorfile]" in run.stdout
    # A nearer pyproject.toml without the table does not count; a nearer tensorfile.toml does.
    (model / "pyproject.toml").write_text('[project]\nname = "y"\n')
    assert cli(["check", str(model)]).code == 0
    (model / "tensorfile.toml").write_text('fail-on = ["dangerous"]\n')
    run = cli(["check", str(model)])
    assert f"policy: {model / 'tensorfile.toml'}" in run.stdout


@RUNNER_ONLY
def test_policy_found_from_the_working_folder(cli: Any, model: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path.parent / f"{tmp_path.name}-project"
    (project / "sub").mkdir(parents=True)
    (project / "tensorfile.toml").write_text(ONE_LINE)
    monkeypatch.chdir(project / "sub")
    assert cli(["check", str(model)]).code == 0
    assert cli(["check", str(model), "--no-policy"]).code == 1


@RUNNER_ONLY
def test_explicit_policy_file(cli: Any, model: Path, tmp_path: Path) -> None:
    policy = tmp_path / "release-policy.toml"
    policy.write_text(ONE_LINE)
    assert cli(["check", str(model), "--policy", str(policy)]).code == 0
    assert cli(["check", str(model / "last.ckpt"), "-p", str(policy)]).code == 0
    usage = cli(["check", str(model), "--policy", str(policy), "--no-policy"])
    assert usage.code == 2 and "exclude each other" in usage.stderr


def test_unknown_key_is_an_error_naming_key_file_and_line(
        cli: Any, model: Path, error_line: Callable[..., str], json_of: Callable[..., Any]) -> None:
    policy = model / "tensorfile.toml"
    policy.write_text(ONE_LINE + "\n[limits]\nmax-file-size = 100\nmax-flies = 3\n")
    run = cli(["check", str(model)])
    assert run.code == 2
    line = error_line(run, "check")
    assert f"{policy}:5: limits.max-flies: unknown key" in line
    error = json_of(cli(["check", str(model), "--json"]), "check", 2)
    assert error["type"] == "PolicyError" and "max-flies" in error["message"]


@RUNNER_ONLY
def test_a_gadget_cannot_be_allowed_and_stays_dangerous(cli: Any, model: Path) -> None:
    (model / "tensorfile.toml").write_text('allow."os.system" = "we trust it"\n')
    run = cli(["check", str(model)])
    assert run.code == 2 and "allow.os.system: cannot be allowed" in run.stderr
    (model / "tensorfile.toml").write_text(ONE_LINE)
    (model / "extra.pkl").write_bytes(OS_SYSTEM)
    run = cli(["check", str(model)])
    assert run.code == 1
    assert "extra.pkl: dangerous" in run.stdout and "FAIL TF001 extra.pkl" in run.stdout
    assert "last.ckpt: allowed by policy" in run.stdout


@RUNNER_ONLY
def test_fail_on_ignore_and_size_bounds(cli: Any, model: Path, json_of: Callable[..., Any]) -> None:
    (model / "extra.pkl").write_bytes(OS_SYSTEM)
    (model / "tensorfile.toml").write_text(ONE_LINE + 'ignore = ["*.pkl"]\n')
    result = json_of(cli(["check", str(model), "--json"]), "check", 0)
    assert {f["path"]: f["status"] for f in result["files"]}["extra.pkl"] == "ignored"
    # Unknown no longer fails the run: reported, exit 0.
    (model / "tensorfile.toml").write_text('fail-on = ["dangerous"]\n')
    (model / "extra.pkl").unlink()
    run = cli(["check", str(model)])
    assert run.code == 0 and "warn TF002 last.ckpt" in run.stdout
    (model / "tensorfile.toml").write_text('fail-on = ["unknown"]\n')
    assert "must include 'dangerous'" in cli(["check", str(model)]).stderr
    (model / "tensorfile.toml").write_text(ONE_LINE + '[limits]\nmax-file-size = "1KiB"\n')
    result = json_of(cli(["check", str(model), "--json"]), "check", 1)
    bound = [f for f in result["findings"] if f["rule"] == "TF102"]
    assert [f["file"] for f in bound] == ["last.ckpt"]
    (model / "tensorfile.toml").write_text(ONE_LINE + '[limits]\nmax-total-size = 100\n')
    assert cli(["check", str(model)]).code == 1
    # config.json, last.ckpt, model.safetensors, tensorfile.toml (name order): 2 are read.
    (model / "tensorfile.toml").write_text(ONE_LINE + '[limits]\nmax-files = 2\n')
    result = json_of(cli(["check", str(model), "--json"]), "check", 1)
    assert [f["path"] for f in result["files"]] == ["config.json", "last.ckpt"]
    (bound,) = [f for f in result["findings"] if f["rule"] == "TF102"]
    assert bound["message"] == "4 files: over the policy's max-files of 2" and bound["fails"]


@RUNNER_ONLY
def test_trust_key_verifies_and_a_changed_file_fails(
        cli: Any, model: Path, tmp_path: Path, json_of: Callable[..., Any]) -> None:
    from tensorfile.integrity import generate_key, sign

    pair = generate_key(tmp_path / "release.pem")
    other = generate_key(tmp_path / "other.pem")
    (model / "tensorfile.toml").write_text(
        ONE_LINE + f'[trust]\nkeys = ["{other.public_key}", "../release.pem.pub"]\n')
    sign(model, pair.private_key)
    result = json_of(cli(["check", str(model), "--json"]), "check", 0)
    assert result["verification"]["status"] == "verified"
    assert result["verification"]["report"]["signer"]["kind"] == "key"
    assert "verification: verified (key" in cli(["check", str(model)]).stdout
    (model / "config.json").write_text('{"hidden": 5}')
    result = json_of(cli(["check", str(model), "--json"]), "check", 1)
    assert result["verification"]["status"] == "failed"
    assert len(result["verification"]["errors"]) == 2  # each key tried
    assert [f["rule"] for f in result["findings"] if f["fails"]] == ["TF101", "TF101"]


@RUNNER_ONLY
def test_trust_pins(cli: Any, model: Path, tmp_path: Path) -> None:
    pins = tmp_path / "model.sha256"
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}"
             for p in sorted(model.iterdir())]
    pins.write_text("\n".join(lines) + "\n")
    (model / "tensorfile.toml").write_text(ONE_LINE + '[trust]\npins = "../model.sha256"\n')
    # The policy file itself is in the folder and not pinned: ignore it.
    assert cli(["check", str(model)]).code == 1
    (model / "tensorfile.toml").write_text(
        ONE_LINE + 'ignore = ["tensorfile.toml"]\n[trust]\npins = "../model.sha256"\n')
    run = cli(["check", str(model)])
    assert run.code == 0, run.stdout
    assert "verification: verified (pins" in run.stdout


@RUNNER_ONLY
def test_a_broken_sharded_index_is_a_finding(cli: Any, tmp_path: Path, st_file: Path,
                                             json_of: Callable[..., Any]) -> None:
    folder = tmp_path / "sharded"
    folder.mkdir()
    shutil.copy(st_file, folder / "model-00001-of-00001.safetensors")
    index = folder / "model.safetensors.index.json"
    index.write_text('{"metadata": {}, "weight_map": {"encoder.weight": '
                     '"model-00001-of-00001.safetensors", "step": "model-00001-of-00001.safetensors"}}')
    assert cli(["check", str(folder), "--no-policy"]).code == 0
    index.write_text('{"metadata": {}, "weight_map": {"missing": '
                     '"model-00001-of-00001.safetensors"}}')
    result = json_of(cli(["check", str(folder), "--no-policy", "--json"]), "check", 2)
    assert [f["rule"] for f in result["findings"]] == ["TF103"]


@RUNNER_ONLY
def test_an_invalid_safetensors_file_fails_validation(
        cli: Any, model: Path, json_of: Callable[..., Any]) -> None:
    """Format validation: a truncated safetensors file (its header promises more data than
    the file holds) is an error that fails the check, though it holds no pickle."""
    data = (model / "model.safetensors").read_bytes()
    (model / "cut.safetensors").write_bytes(data[:-4])
    (model / "tensorfile.toml").write_text(ONE_LINE)
    result = json_of(cli(["check", str(model), "--json"]), "check", 2)
    status = {f["path"]: f["status"] for f in result["files"]}
    assert status["cut.safetensors"] == "error" and status["model.safetensors"] == "safe"
    (failing,) = [f for f in result["findings"] if f["fails"]]
    assert (failing["rule"], failing["file"]) == ("TF003", "cut.safetensors")
    assert "TruncatedFileError" in failing["message"]
    # An error the policy does not fail on is reported and the check passes.
    (model / "tensorfile.toml").write_text(ONE_LINE + 'fail-on = ["dangerous", "unknown"]\n')
    run = cli(["check", str(model)])
    assert run.code == 0 and "warn TF003 cut.safetensors" in run.stdout


@RUNNER_ONLY
def test_help_fits_80_columns(cli: Any) -> None:
    run = cli(["check", "--help"], env={"COLUMNS": "80"})
    assert run.code == 0
    assert all(len(line) <= 80 for line in run.stdout.splitlines())
    assert "--policy" in run.stdout and "sarif" in run.stdout


@RUNNER_ONLY
def test_git_files_at_the_top_are_left_out_as_verify_leaves_them(
        cli: Any, model: Path, json_of: Callable[..., Any]) -> None:
    """``check .`` in a repository (the pre-commit hook) does not scan .git, whose LFS
    store holds second copies of the models, nor .github; a nested .git is scanned."""
    (model / "tensorfile.toml").write_text(ONE_LINE)
    for folder in (".git/lfs/objects/ab", ".github"):
        (model / folder).mkdir(parents=True)
        (model / folder / "evil.pkl").write_bytes(OS_SYSTEM)
    result = json_of(cli(["check", str(model), "--json"]), "check", 0)
    assert not [f["path"] for f in result["files"] if f["path"].startswith(".git")]
    (model / "sub" / ".git").mkdir(parents=True)
    (model / "sub" / ".git" / "evil.pkl").write_bytes(OS_SYSTEM)
    result = json_of(cli(["check", str(model), "--json"]), "check", 1)
    assert [f["path"] for f in result["files"] if f["status"] == "dangerous"] == [
        "sub/.git/evil.pkl"]


@RUNNER_ONLY
def test_hand_built_lightning_scans_as_torch_saved(
        cli: Any, tmp_path: Path, json_of: Callable[..., Any],
        lightning_builders: tuple[Callable[[Path], Path], Callable[[Path], Path]]) -> None:
    """The checkpoint the numpy-only core run assembles by hand (no torch there)
    gets the same findings, globals and verdict as the one torch.save writes."""
    pytest.importorskip("torch", reason="compares with what the real torch.save writes")
    torch_saved_lightning, hand_built_lightning = lightning_builders

    def findings(name: str, build: Callable[[Path], Path]) -> Any:
        folder = tmp_path / name
        folder.mkdir()
        build(folder / "last.ckpt")
        result = json_of(cli(["check", str(folder), "--json"]), "check", 1)
        return sorted((f["rule"], f["global"] or "", f["fails"]) for f in result["findings"])

    torch_saved = findings("torch", torch_saved_lightning)
    assert torch_saved == findings("hand", hand_built_lightning)
    assert ("TF002", "argparse.Namespace", True) in torch_saved
