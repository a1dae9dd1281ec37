"""tensorfile's first run: the main job, end to end, on a model made right here.

Run it from the repository root (the README's first set-up command does)::

    .venv/bin/python examples/first_run.py

What it does, each step through the real ``tensorfile`` command line so you
see exactly what you would see in a terminal:

1. makes a small real PyTorch model and saves its state dict with
   ``torch.save`` (a pickle, the way most checkpoints are shipped);
2. ``tensorfile scan`` calls it safe, and calls a crafted hostile pickle
   dangerous (written as bytes; nothing is ever loaded);
3. ``tensorfile convert`` turns the model folder into safetensors without
   running the pickle (and refuses the hostile one), ``tensorfile inspect``
   shows what it wrote;
4. ``tensorfile keygen`` makes a signing key pair;
5. ``tensorfile sign`` signs the converted folder;
6. ``tensorfile verify`` accepts it;
7. a copy with one byte flipped is rejected by ``tensorfile verify`` (exit 1).

Everything is written under ``examples/out/first_run/`` (git-ignored) and
nothing is downloaded. The script exits non-zero if any step does not behave
as described.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Where everything is written (``--out DIR`` to change it; it is emptied first).
OUT = HERE / "out" / "first_run"


def tensorfile_command() -> list[str]:
    """The installed console script beside this Python, else ``python -m tensorfile_cli``."""
    script = Path(sys.executable).parent / "tensorfile"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tensorfile_cli"]


class StepFailed(Exception):
    pass


def run(args: list[str | Path], *, expect: int, shows: tuple[str, ...] = ()) -> str:
    """Run ``tensorfile ARGS`` in OUT, print what it printed, check its exit code and text.

    Paths are passed relative to OUT, as you would type them there.
    """
    argv = [os.path.relpath(a, OUT) if isinstance(a, Path) else a for a in args]
    shown = " ".join(argv)
    print(f"\n$ tensorfile {shown}", flush=True)
    proc = subprocess.run(
        [*tensorfile_command(), *argv], capture_output=True, text=True, cwd=OUT, check=False
    )
    sys.stdout.write(proc.stdout)
    sys.stdout.write(proc.stderr)
    print(f"[exit {proc.returncode}]", flush=True)
    if proc.returncode != expect:
        raise StepFailed(f"`tensorfile {shown}` exited {proc.returncode}, expected {expect}")
    for text in shows:
        if text not in proc.stdout + proc.stderr:
            raise StepFailed(f"`tensorfile {shown}` did not print {text!r}")
    return proc.stdout


def make_checkpoint(folder: Path) -> Path:
    """A small real model, saved the way people save models."""
    import torch
    from torch import nn

    class TinyClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(100, 16)
            self.encoder = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32))
            self.head = nn.Linear(32, 4)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.head(self.encoder(self.embed(tokens).mean(dim=1)))
            return logits

    torch.manual_seed(0)
    model = TinyClassifier()
    path = folder / "pytorch_model.bin"
    torch.save(model.state_dict(), path)
    (folder / "config.json").write_text('{"model_type": "tiny-classifier", "num_labels": 4}\n')
    return path


def hostile_pickle(path: Path) -> Path:
    """A pickle that would run ``os.system`` if loaded. Written as bytes, never loaded."""
    path.write_bytes(
        b"\x80\x02cposix\nsystem\nq\x00X\x1d\x00\x00\x00echo this would have run code"
        b"q\x01\x85q\x02Rq\x03."
    )
    return path


def flip_one_byte(path: Path, tensor: str) -> None:
    """Flip the lowest bit of the first byte of ``tensor`` in a safetensors file."""
    import tensorfile

    with tensorfile.safe_open(path) as f:
        start, _ = f.byte_range(tensor)
    data = bytearray(path.read_bytes())
    data[start] ^= 0x01
    path.write_bytes(bytes(data))


def main() -> int:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"work folder (default {OUT})")
    OUT = parser.parse_args().out.resolve()
    if OUT.exists():
        shutil.rmtree(OUT)
    model_dir = OUT / "tiny-model"
    model_dir.mkdir(parents=True)
    (OUT / "downloads").mkdir()

    print("1. A small PyTorch model, saved with torch.save(model.state_dict(), ...)")
    checkpoint = make_checkpoint(model_dir)
    print(f"   wrote {checkpoint.relative_to(OUT)} ({checkpoint.stat().st_size:,} bytes)")

    try:
        print("\n2. Scan before loading: is it only tensors, or would it run code?")
        run(["scan", checkpoint], expect=0, shows=(": safe",))
        evil = hostile_pickle(OUT / "downloads" / "evil.bin")
        run(["scan", evil], expect=1, shows=("dangerous", "posix.system"))

        print("\n3. Convert to safetensors without running the pickle (torch is not used)")
        safe_dir = OUT / "tiny-model-safetensors"
        run(["convert", model_dir, safe_dir], expect=0, shows=("model.safetensors",))
        weights = safe_dir / "model.safetensors"
        run(["inspect", weights], expect=0, shows=("embed.weight", "head.bias"))
        run(["convert", evil, OUT / "downloads" / "evil.safetensors"], expect=1, shows=("posix.system",))
        if (OUT / "downloads" / "evil.safetensors").exists():
            raise StepFailed("the refused conversion left an output file")

        print("\n4. A signing key pair")
        keys = OUT / "keys"
        keys.mkdir()
        private_key, public_key = keys / "signing-key.pem", keys / "signing-key.pem.pub"
        run(["keygen", private_key], expect=0, shows=("fingerprint",))

        print("\n5. Sign the converted folder (an OpenSSF model-signing bundle, model.sig)")
        run(["sign", safe_dir, "--key", private_key], expect=0, shows=("model.sig",))

        print("\n6. Verify it: every byte, file name and tensor name against the signature")
        run(["verify", safe_dir, "--key", public_key], expect=0, shows=("verified",))

        print("\n7. Flip one bit of head.weight in a copy: verification must fail (exit 1)")
        tampered = OUT / "tiny-model-tampered"
        shutil.copytree(safe_dir, tampered)
        flip_one_byte(tampered / weights.name, "head.weight")
        run(
            ["verify", tampered, "--key", public_key],
            expect=1,
            shows=("error:", "head.weight"),
        )
    except StepFailed as exc:
        print(f"\nFIRST RUN FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"\nAll steps behaved as described. The files are in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
