"""diffusers, accelerate, peft and huggingface_hub saving and loading tiny
models, run in a fresh interpreter by test_libraries.py (each binds
``safetensors`` names when first imported, so the import hook must come first
in a process of its own).

    python libs_scenario.py real|tensorfile FOLDER

Every model is built from a seed in the script; nothing is downloaded. Files
go under FOLDER/<library>/...; ``report.json`` holds, per step, what was read
back (sha256 of each tensor's bytes) or the error, and which module answered
``safetensors.torch``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _digest(state: Any) -> dict[str, str]:
    import torch

    return {
        k: hashlib.sha256(v.detach().contiguous().view(-1).view(torch.uint8).numpy()).hexdigest()
        for k, v in state.items()
        if isinstance(v, torch.Tensor)
    }


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mlp(seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.Linear(16, 4)
    )


# ---------------------------------------------------------------- diffusers


def diffusers_remote(out: Path) -> dict[str, Any]:
    """The remote-VAE request bodies: the tensor's raw bytes via ``_to_ndarray``.

    ``prepare_encode`` sends ``_to_ndarray(image.contiguous())[0].tobytes()``:
    with the reference the array points into a tensor freed before
    ``tobytes`` reads it, so its body is whatever that memory holds by then;
    tensorfile's array keeps its tensor alive.
    """
    import torch
    from diffusers.utils.remote_utils import prepare_decode, prepare_encode

    torch.manual_seed(0)
    latent = torch.randn(1, 4, 8, 8, dtype=torch.float16)
    image = torch.rand(1, 3, 16, 16).transpose(2, 3)  # prepare_encode makes it contiguous
    dec = prepare_decode(latent, scaling_factor=0.18215, output_type="pt")
    enc = prepare_encode(image, scaling_factor=0.18215)
    bf16 = prepare_decode(latent.to(torch.bfloat16), output_type="pt", partial_postprocess=True)
    return {
        "decode": _sha(dec["data"]),
        "decode_is_the_tensor": dec["data"] == latent.numpy().tobytes(),
        "decode_params": dec["params"],
        "encode": _sha(enc["data"]),
        "encode_is_the_image": enc["data"] == image.contiguous().numpy().tobytes(),
        "bf16": _sha(bf16["data"]),
    }


def diffusers_models(out: Path) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKL

    def vae() -> Any:
        return AutoencoderKL(
            block_out_channels=(8,), layers_per_block=1, latent_channels=4, norm_num_groups=4,
            sample_size=16,
        )

    torch.manual_seed(0)
    model = vae().eval()
    model.save_pretrained(out / "vae")
    model.save_pretrained(out / "vae-sharded", max_shard_size="8KB")
    loaded = AutoencoderKL.from_pretrained(out / "vae").eval()
    sharded = AutoencoderKL.from_pretrained(out / "vae-sharded").eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        same = bool(torch.equal(model(x).sample, loaded(x).sample))
    return {
        "before": _digest(model.state_dict()),
        "loaded": _digest(loaded.state_dict()),
        "sharded": _digest(sharded.state_dict()),
        "shards": len(list((out / "vae-sharded").glob("*.safetensors"))),
        "same_output": same,
    }


# ---------------------------------------------------------------- accelerate


def accelerate_steps(out: Path) -> dict[str, Any]:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import load_checkpoint_in_model, save

    model = _mlp(0)
    acc = Accelerator(cpu=True)
    acc.save_model(model, out / "save_model")
    acc.save_model(model, out / "save_model-sharded", max_shard_size="1KB")
    save(model.state_dict(), out / "save.safetensors", safe_serialization=True)
    fresh = _mlp(1)
    load_checkpoint_in_model(fresh, out / "save_model-sharded")
    single = _mlp(2)
    load_checkpoint_in_model(single, str(out / "save_model" / "model.safetensors"))
    prepared = acc.prepare(_mlp(0))
    optimizer = acc.prepare(torch.optim.SGD(prepared.parameters(), lr=0.1))
    acc.save_state(out / "state", safe_serialization=True)
    with torch.no_grad():
        for p in prepared.parameters():
            p.zero_()
    acc.load_state(out / "state")
    del optimizer
    return {
        "before": _digest(model.state_dict()),
        "load_checkpoint_in_model": _digest(fresh.state_dict()),
        "single": _digest(single.state_dict()),
        "load_state": _digest(prepared.state_dict()),
    }


# ---------------------------------------------------------------- peft


def peft_steps(out: Path) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    config = LoraConfig(r=2, lora_alpha=4, target_modules=["0", "2"], init_lora_weights=False)
    torch.manual_seed(0)
    peft_model = get_peft_model(_mlp(0), config)
    peft_model.save_pretrained(str(out / "adapter"))
    loaded = PeftModel.from_pretrained(_mlp(0), out / "adapter")
    weights = load_peft_weights(str(out / "adapter"))
    other = get_peft_model(_mlp(0), LoraConfig(r=2, lora_alpha=4, target_modules=["0", "2"]))
    set_peft_model_state_dict(other, weights)
    x = torch.rand(2, 8)
    with torch.no_grad():
        same = bool(torch.equal(peft_model(x), loaded(x)))
    lora = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    return {
        "lora": _digest(lora),
        "loaded": _digest({k: v for k, v in loaded.state_dict().items() if "lora_" in k}),
        "load_peft_weights": _digest(weights),
        "set_state": _digest({k: v for k, v in other.state_dict().items() if "lora_" in k}),
        "same_output": same,
    }


# ---------------------------------------------------------------- huggingface_hub


def hub_steps(out: Path) -> dict[str, Any]:
    import huggingface_hub as hub
    import torch

    class Tiny(torch.nn.Module, hub.PyTorchModelHubMixin):  # type: ignore[misc]
        def __init__(self, width: int = 6) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, width)
            self.head = torch.nn.Linear(width, 10, bias=False)
            self.head.weight = self.emb.weight  # tied: save_model keeps one

    torch.manual_seed(0)
    model = Tiny()
    model.save_pretrained(out / "mixin")
    mixin = Tiny.from_pretrained(out / "mixin")
    (out / "torch_model").mkdir()
    hub.save_torch_model(model, out / "torch_model", max_shard_size=200)
    fresh = Tiny()
    torch.nn.init.zeros_(fresh.emb.weight)
    hub.load_torch_model(fresh, out / "torch_model")
    (out / "state_dict").mkdir()
    hub.save_torch_state_dict(_mlp(0).state_dict(), out / "state_dict", max_shard_size="1KB")
    # save_model records the tied name in metadata without "format": "pt", so
    # hub refuses the mixin's file; the reference does too (the test compares).
    try:
        hub.load_state_dict_from_file(out / "mixin" / "model.safetensors")
        refused = ""
    except OSError as e:
        refused = type(e).__name__
    state: dict[str, Any] = {}
    for shard in sorted((out / "torch_model").glob("*.safetensors")):
        state.update(hub.load_state_dict_from_file(shard, map_location="cpu"))
    return {
        "before": _digest(model.state_dict()),
        "mixin": _digest(mixin.state_dict()),
        "mixin_tied": mixin.head.weight.data_ptr() == mixin.emb.weight.data_ptr(),
        "load_torch_model": _digest(fresh.state_dict()),
        "load_state_dict_from_file": _digest(state),
        "mixin_file_refused": refused,
    }


STEPS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "diffusers_remote": diffusers_remote,
    "diffusers": diffusers_models,
    "accelerate": accelerate_steps,
    "peft": peft_steps,
    "huggingface_hub": hub_steps,
}


def main() -> None:
    mode, folder = sys.argv[1], Path(sys.argv[2])
    if mode == "tensorfile":
        import tensorfile.compat

        tensorfile.compat.install()
    import safetensors.torch

    report: dict[str, Any] = {"safetensors_torch": safetensors.torch.load_file.__module__}
    cpu: dict[str, float] = {"start": time.process_time()}  # where the test's time goes
    for name, step in STEPS.items():
        out = folder / name
        out.mkdir(parents=True, exist_ok=True)
        started = time.process_time()
        try:
            report[name] = step(out)
        except Exception as e:  # the test shows it
            report[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        cpu[name] = round(time.process_time() - started, 2)
    report["cpu_seconds"] = cpu
    (folder / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
