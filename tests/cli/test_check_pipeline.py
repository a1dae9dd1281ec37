"""The pipeline glue of ``tensorfile check``: the pre-commit hooks and the GitHub Action.

pre-commit: the real ``pre-commit`` runs the published hooks of
``.pre-commit-hooks.yaml`` (``language: python``) in a temporary git repository
whose ``.pre-commit-config.yaml`` names a committed copy of this checkout as
the hook repository, as a user's names the GitHub one. pre-commit clones it at
its ``rev``, builds a virtualenv and pip-installs it there. Tests are offline,
so pip gets ``PIP_NO_INDEX``, no build isolation (the virtualenv's seeded
setuptools builds the wheel) and ``PIP_NO_DEPS``; the dependencies reach the
hook through ``PYTHONPATH``, a folder of links to the test environment's
packages without tensorfile's own, so the ``tensorfile`` that runs is the one
pre-commit installed. The manifest is also checked by ``pre-commit
validate-manifest``.

The action: ``action.yml`` is parsed and its ``run:`` steps are run with bash,
as the runner would, with their ``env:`` expressions filled in. The install
step really pip-installs a copy of this checkout, offline: into a fresh venv
that sees the test environment's packages (a ``.pth`` file), with
``PIP_NO_INDEX`` and no build isolation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ONE_LINE = 'allow."argparse.Namespace" = "Lightning hparams"\n'
OS_SYSTEM = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env=_env(), timeout=60)


@pytest.fixture
def repo(tmp_path: Path, lightning_ckpt: Path, st_file: Path) -> Path:
    """A git repository holding a model folder with a Lightning checkpoint."""
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    shutil.copy(lightning_ckpt, root / "models" / "last.ckpt")
    shutil.copy(st_file, root / "models" / "model.safetensors")
    (root / "tensorfile.toml").write_text(ONE_LINE)
    _git(root, "init", "-q")
    return root


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of this checkout's files, committed in a git repository of its own (what a
    hook repository or an action's checkout is), and the commit."""
    copy = tmp_path_factory.mktemp("tensorfile") / "tensorfile"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*cache*", ".hypothesis", "build", "*.egg-info", "out"))
    _git(copy, "init", "-q")
    _git(copy, "add", "-A")
    _git(copy, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "x")
    sha = subprocess.run(["git", "-C", str(copy), "rev-parse", "HEAD"], check=True, text=True,
                         capture_output=True, env=_env()).stdout.strip()
    return copy, sha


def test_pre_commit_manifest_is_valid() -> None:
    pytest.importorskip("pre_commit")
    run = subprocess.run([sys.executable, "-m", "pre_commit", "validate-manifest",
                          str(REPO / ".pre-commit-hooks.yaml")], capture_output=True, text=True,
                         env=_env(), timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    hooks = {h["id"]: h for h in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"tensorfile-scan", "tensorfile-check"}
    assert {h["language"] for h in hooks.values()} == {"python"}
    assert hooks["tensorfile-scan"]["entry"] == "tensorfile scan"
    assert hooks["tensorfile-check"]["entry"] == "tensorfile check"


#: Left out of the links: pre-commit's virtualenv has its own pip and setuptools, which
#: install the hook repository as they would for a user.
_BUILD_TOOLS = {"pip", "setuptools", "pkg_resources", "_distutils_hack", "wheel"}


def _dependencies(folder: Path) -> Path:
    """Links to the test environment's installed packages, tensorfile's own and the
    build tools left out."""
    folder.mkdir()
    for site_dir in dict.fromkeys(site.getsitepackages()):
        for entry in Path(site_dir).iterdir():
            name = entry.name.lower()
            if (name.startswith(("tensorfile", "__editable__")) or name.endswith(".pth")
                    or re.split(r"[-.]", name)[0] in _BUILD_TOOLS
                    or (folder / entry.name).exists()):
                continue
            (folder / entry.name).symlink_to(entry)
    return folder


def _pre_commit(repo: Path, home: Path, hooks: tuple[Path, str], *args: str
                ) -> subprocess.CompletedProcess[str]:
    """``pre-commit run ARGS`` in ``repo``, with the hooks of the repository ``hooks``
    (a path and commit, as ``repo:`` and ``rev:`` name them in a user's config)."""
    config = {"repos": [{"repo": str(hooks[0]), "rev": hooks[1], "hooks": [
        {"id": "tensorfile-scan"}, {"id": "tensorfile-check"}]}]}
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    _git(repo, "add", "-A")
    deps = home / "deps"
    if not deps.exists():
        _dependencies(deps)
    env = {k: v for k, v in _env().items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    # virtualenv seeds setuptools from its own wheels (by default only below Python 3.12).
    env.update(PRE_COMMIT_HOME=str(home / "cache"), PYTHONPATH=str(deps), PIP_NO_INDEX="1",
               VIRTUALENV_SETUPTOOLS="bundle",
               PIP_NO_DEPS="1", PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "run", "--color", "never", *args],
        cwd=repo, capture_output=True, text=True, timeout=300, env=env)


def test_pre_commit_hooks_run_in_a_temporary_repository(
        repo: Path, tmp_path: Path, checkout: tuple[Path, str]) -> None:
    pytest.importorskip("pre_commit")
    pytest.importorskip("virtualenv")
    home = tmp_path / "pre-commit-home"
    home.mkdir()
    # The scan hook has no policy: the Namespace is unknown there, and the commit stops.
    run = _pre_commit(repo, home, checkout, "tensorfile-scan", "--all-files")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "models/last.ckpt: unknown" in run.stdout
    # pre-commit built its own environment from the hook repository and ran that tensorfile.
    (installed,) = (home / "cache").glob("repo*/py_env-*/lib/python*/site-packages/tensorfile")
    assert (installed / "check" / "runner.py").is_file()
    # The check hook reads the repository's tensorfile.toml: allowed by policy.
    run = _pre_commit(repo, home, checkout, "tensorfile-check", "--all-files")
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"tensorfile check\.+Passed", run.stdout)
    (repo / "models" / "evil.pkl").write_bytes(OS_SYSTEM)
    run = _pre_commit(repo, home, checkout, "tensorfile-check", "--all-files")
    assert run.returncode == 1 and "evil.pkl: dangerous" in run.stdout, run.stdout
    assert re.search(r"tensorfile check\.+Failed", run.stdout)
    run = _pre_commit(repo, home, checkout, "tensorfile-scan", "--files", "models/evil.pkl")
    assert run.returncode == 1 and "models/evil.pkl: dangerous" in run.stdout
    assert "last.ckpt" not in run.stdout  # only the files handed to it
    # A file the hooks do not match is not handed to them: both skip.
    (repo / "models" / "evil.pkl").unlink()
    (repo / "notes.txt").write_text("hello")
    run = _pre_commit(repo, home, checkout, "--files", "notes.txt")
    assert run.returncode == 0, run.stdout
    assert len(re.findall(r"\(no files to check\)Skipped", run.stdout)) == 2, run.stdout


# -- the action ---------------------------------------------------------------------------
_EXPR = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def _fill(value: str, context: dict[str, str]) -> str:
    return _EXPR.sub(lambda m: context[m.group(1)], value)


def _run_steps(action: dict[str, Any], inputs: dict[str, str], github: dict[str, str],
               env: dict[str, str], workdir: Path, tmp_path: Path, *, install: bool = True
               ) -> tuple[dict[str, str], int]:
    """Run the composite action's bash steps in order (the install step only when
    ``install``: later runs reuse it); the outputs and the last exit code."""
    defaults = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
    context = {f"inputs.{k}": v for k, v in {**defaults, **inputs}.items()}
    context.update({f"github.{k}": v for k, v in github.items()})
    outputs: dict[str, str] = {}
    code = 0
    for step in action["runs"]["steps"]:
        if "run" not in step or (not install and step["name"].startswith("Install")):
            continue
        assert step["shell"] == "bash" and "${{" not in step["run"]  # inputs only through env
        out_file = tmp_path / f"github-output-{step.get('id', 'x')}"
        out_file.write_text("")
        step_env = {k: _fill(str(v), context) for k, v in step.get("env", {}).items()}
        run = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=workdir, text=True,
                             capture_output=True, timeout=600,
                             env={**env, **step_env, "GITHUB_OUTPUT": str(out_file)})
        code = run.returncode
        if step.get("id"):
            for line in out_file.read_text().splitlines():
                key, _, value = line.partition("=")
                context[f"steps.{step['id']}.outputs.{key}"] = value
                outputs[f"{step['id']}.{key}"] = value
        if step.get("name", "").startswith("Install"):
            assert code == 0, run.stdout + run.stderr
    return outputs, code


def _offline_venv(tmp_path: Path) -> dict[str, str]:
    """A fresh venv that sees the test environment's packages, and pip kept offline."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "test-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PIP_NO_INDEX="1",
               PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def test_action_steps_run_on_a_model_folder(repo: Path, tmp_path: Path,
                                           checkout: tuple[Path, str]) -> None:
    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    (upload,) = [s for s in action["runs"]["steps"]
                 if str(s.get("uses", "")).startswith("github/codeql-action/upload-sarif@")]
    assert upload["with"]["sarif_file"] == "${{ inputs.sarif-file }}"
    env = _offline_venv(tmp_path)
    github = {"action_path": str(checkout[0])}  # the action's own checkout, as the runner has it
    outputs, code = _run_steps(action, {"path": "models"}, github, env, repo, tmp_path)
    assert code == 0 and outputs["check.exit-code"] == "0", outputs
    assert outputs["check.sarif"] == "true"
    installed = subprocess.run(["tensorfile", "--version"], env=env, capture_output=True,
                               text=True, check=True).stdout
    assert installed.startswith("tensorfile ")
    where = subprocess.run(["python", "-c", "import tensorfile; print(tensorfile.__file__)"],
                           env=env, capture_output=True, text=True, check=True).stdout
    assert str(tmp_path / "venv") in where  # the action's install, not the test environment's
    log = json.loads((repo / "tensorfile.sarif").read_text())
    kinds = {r["properties"]["kind"] for r in log["runs"][0]["results"]}
    assert kinds == {"allowed"}
    # Code scanning reads URIs from the repository's root: models/last.ckpt, not last.ckpt.
    assert {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in log["runs"][0]["results"]} == {"models/last.ckpt"}
    # Without the policy entry the last step fails the job, after the SARIF is written.
    (repo / "tensorfile.toml").write_text("# nothing allowed\n")
    outputs, code = _run_steps(action, {"path": "models"}, github, env, repo, tmp_path,
                               install=False)
    assert code == 1 and outputs["check.exit-code"] == "1"
    log = json.loads((repo / "tensorfile.sarif").read_text())
    assert {r["ruleId"] for r in log["runs"][0]["results"]} == {"TF002"}
    # An explicit policy file input.
    (tmp_path / "release.toml").write_text(ONE_LINE)
    outputs, code = _run_steps(action, {"path": "models", "policy": str(tmp_path / "release.toml")},
                               github, env, repo, tmp_path, install=False)
    assert code == 0 and outputs["check.exit-code"] == "0"
    # A policy that cannot be read: exit 2 and no SARIF, and an old log is not uploaded.
    (tmp_path / "broken.toml").write_text("colour = 1\n")
    outputs, code = _run_steps(action, {"path": "models", "policy": str(tmp_path / "broken.toml")},
                               github, env, repo, tmp_path, install=False)
    assert code == 2 and outputs["check.exit-code"] == "2"
    assert "check.sarif" not in outputs and not (repo / "tensorfile.sarif").exists()
    # A path that looks like an option is still the path checked (not --help's exit 0).
    (repo / "--help").mkdir()
    (repo / "--help" / "evil.pkl").write_bytes(OS_SYSTEM)
    outputs, code = _run_steps(action, {"path": "--help", "sarif-file": "-x.sarif"},
                               github, env, repo, tmp_path, install=False)
    assert code == 1 and outputs["check.exit-code"] == "1"
    log = json.loads((repo / "-x.sarif").read_text())
    assert {r["ruleId"] for r in log["runs"][0]["results"]} == {"TF001"}


# -- the README's pipeline ----------------------------------------------------------------
def _readme_blocks(lang: str) -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### In a pipeline"):readme.index("### Exit codes")]
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def test_readme_policy_parses(tmp_path: Path) -> None:
    from tensorfile.check import load_policy

    (block,) = _readme_blocks("toml")
    (tmp_path / "tensorfile.toml").write_text(block)
    policy = load_policy(tmp_path / "tensorfile.toml")
    assert policy.allow == {"argparse.Namespace": "hparams from save_hyperparameters()"}
    assert policy.trust.keys == (tmp_path / "keys" / "release.pub",)


def test_readme_workflow_uses_the_action_in_under_20_lines() -> None:
    (block,) = [b for b in _readme_blocks("yaml") if "jobs:" in b]
    assert len(block.strip().splitlines()) < 20
    workflow = yaml.safe_load(block)
    (step,) = [s for s in workflow["jobs"]["models"]["steps"] if "tensorfile" in s["uses"]]
    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert set(step["with"]) <= set(action["inputs"])
    assert workflow["permissions"]["security-events"] == "write"  # upload-sarif needs it


def test_readme_pre_commit_config_names_the_published_hooks() -> None:
    (block,) = [b for b in _readme_blocks("yaml") if "repos:" in b]
    (repo,) = yaml.safe_load(block)["repos"]
    published = {h["id"] for h in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())}
    assert repo["rev"] and {h["id"] for h in repo["hooks"]} <= published
