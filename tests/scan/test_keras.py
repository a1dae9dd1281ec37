"""Keras: .keras archives as Keras 3 writes them, .h5 files written with h5py."""

from __future__ import annotations

import base64
import json
import marshal
import sys
from pathlib import Path

import pytest
from format_kit import dense, keras_archive, reasons, scan_file, sequential

from tensorfile.pickles import Verdict

h5py = pytest.importorskip("h5py")
np = pytest.importorskip("numpy")


def lambda_layer() -> dict[str, object]:
    """A Lambda layer as Keras 3 serializes a Python lambda (marshal'd bytecode)."""
    code = base64.b64encode(marshal.dumps((lambda x: x).__code__)).decode()
    return {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
            "config": {"name": "lam", "function": {"class_name": "__lambda__",
                                                    "config": {"code": code, "defaults": None,
                                                               "closure": None}}}}


def test_plain_layers_are_safe(tmp_path: Path) -> None:
    report = scan_file(keras_archive(tmp_path / "m.keras", sequential(dense("a"), dense("b"))))
    assert report.format == "keras" and report.verdict is Verdict.SAFE, reasons(report)


def test_by_content_under_another_name(tmp_path: Path) -> None:
    report = scan_file(keras_archive(tmp_path / "model.zip", sequential(lambda_layer())))
    assert report.format == "keras" and report.verdict is Verdict.DANGEROUS


@pytest.mark.parametrize(("layer", "verdict", "needle"), [
    (lambda_layer(), Verdict.DANGEROUS, "lambda"),
    (dense("a", {"class_name": "__lambda__", "config": {"code": "YQ=="}}), Verdict.DANGEROUS,
     "lambda"),
    (dense("a", {"module": "os", "class_name": "function", "config": "system",
                 "registered_name": "function"}), Verdict.DANGEROUS, "os.system"),
    (dense("a", {"module": "builtins", "class_name": "function", "config": "eval"}),
     Verdict.DANGEROUS, "builtins.eval"),
    ({"module": "my_package.layers", "class_name": "Custom", "registered_name": "Pkg>Custom",
      "config": {"name": "c"}}, Verdict.UNKNOWN, "my_package.layers.Custom"),
    ({"module": None, "class_name": "Custom", "registered_name": "Pkg>Custom",
      "config": {"name": "c"}}, Verdict.UNKNOWN, "Pkg>Custom"),
    ({"class_name": "TFOpLambda", "config": {"name": "t", "function": "io.write_file"}},
     Verdict.UNKNOWN, "io.write_file"),
])
def test_code_in_the_config(tmp_path: Path, layer: dict[str, object], verdict: Verdict,
                            needle: str) -> None:
    report = scan_file(keras_archive(tmp_path / "m.keras", sequential(dense("a"), layer)))
    assert report.verdict is verdict, reasons(report)
    assert any(needle in r for r in reasons(report))


def test_broken_archives_are_errors(tmp_path: Path) -> None:
    path = keras_archive(tmp_path / "m.keras", sequential(dense("a")))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert scan_file(path).verdict is Verdict.ERROR
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", "{}")
    assert "no config.json" in reasons(scan_file(path))[0]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", "[" * 100_000)
    assert scan_file(path).verdict is Verdict.ERROR


def test_a_pickle_in_the_archive_is_still_found(tmp_path: Path) -> None:
    evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x85R."
    path = keras_archive(tmp_path / "m.keras", sequential(dense("a")),
                         extra={"archive/data.pkl": evil})
    report = scan_file(path)
    assert report.format == "keras" and report.verdict is Verdict.DANGEROUS


def _h5(path: Path, **attrs: str) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        f.create_dataset("model_weights/dense/kernel:0", data=np.ones((2, 2), np.float32))
    return path


def keras2_config(*layers: dict[str, object]) -> str:
    return json.dumps({"class_name": "Sequential", "config": {"name": "s", "layers": list(layers)}})


def test_keras2_h5(tmp_path: Path) -> None:
    plain = {"class_name": "Dense", "config": {"name": "d", "units": 2, "activation": "relu"}}
    lam = {"class_name": "Lambda", "config": {"name": "l", "function": ["YQ==", None, None],
                                              "function_type": "lambda", "module": "__main__"}}
    report = scan_file(_h5(tmp_path / "plain.h5", model_config=keras2_config(plain)))
    assert report.format == "keras" and report.verdict is Verdict.SAFE, reasons(report)
    report = scan_file(_h5(tmp_path / "lambda.h5", model_config=keras2_config(plain, lam)))
    assert report.verdict is Verdict.DANGEROUS
    # Weights only (model.save_weights): nothing to run.
    assert scan_file(_h5(tmp_path / "w.h5")).verdict is Verdict.SAFE
    # The training config names losses and metrics the same way.
    bad = json.dumps({"loss": {"module": "os", "class_name": "function", "config": "system"}})
    report = scan_file(_h5(tmp_path / "t.h5", model_config=keras2_config(plain),
                           training_config=bad))
    assert report.verdict is Verdict.DANGEROUS


def test_without_h5py_an_h5_file_is_not_assessed(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = _h5(tmp_path / "m.h5", model_config=keras2_config())
    monkeypatch.setitem(sys.modules, "h5py", None)
    report = scan_file(path)
    assert report.verdict is Verdict.NOT_ASSESSED
    from tensorfile.pickles import scan

    full = scan(path)
    assert full.exit_code == 2 and full.exit_code_allowing(not_assessed=True) == 0


def test_a_broken_h5_is_an_error(tmp_path: Path) -> None:
    path = _h5(tmp_path / "m.h5", model_config=keras2_config())
    data = path.read_bytes()
    path.write_bytes(data[:600])
    assert scan_file(path).verdict is Verdict.ERROR
