"""One transformers / huggingface_hub scenario, run in a fresh interpreter by
test_transformers.py (transformers binds ``safetensors`` names when it is
first imported, so the import hook must come first in a process of its own).

    python hf_scenario.py MODE FOLDER [PUBLIC_KEY]

MODE ``save-real`` / ``save-tensorfile``: build a tiny GPT-2 from a config
(tied input and output embeddings), save it sharded with ``save_pretrained``
and with huggingface_hub's ``save_torch_state_dict``, load both back
(``from_pretrained``, ``load_torch_model``) and write ``report.json`` with
what was seen. ``save-real`` uses the real safetensors; the other runs with
``tensorfile.compat.install()`` first. MODE ``load-verified``: with
``tensorfile.compat.install(verify=PUBLIC_KEY)``, ``from_pretrained`` the
folder; the outcome (or the error's class) goes to ``report.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _digest(state: dict[str, object]) -> dict[str, str]:
    import hashlib

    import torch

    out = {}
    for k, v in state.items():
        assert isinstance(v, torch.Tensor)
        out[k] = hashlib.sha256(v.detach().contiguous().view(torch.uint8).numpy()).hexdigest()
    return out


def _tiny_config() -> object:
    import transformers

    return transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=96, n_positions=32, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=0,
    )


def save_and_load(folder: Path, use_tensorfile: bool) -> dict[str, object]:
    if use_tensorfile:
        import tensorfile.compat

        tensorfile.compat.install()
    import huggingface_hub
    import torch
    import transformers
    import transformers.modeling_utils as mu

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(_tiny_config()).eval()
    before = _digest(model.state_dict())
    model.save_pretrained(folder / "pretrained", max_shard_size="20KB")
    loaded = transformers.GPT2LMHeadModel.from_pretrained(folder / "pretrained").eval()
    hub = folder / "hub"
    hub.mkdir()
    huggingface_hub.save_torch_state_dict(model.state_dict(), hub, max_shard_size="20KB")
    torch.manual_seed(1)
    other = transformers.GPT2LMHeadModel(_tiny_config()).eval()
    huggingface_hub.load_torch_model(other, hub)
    x = torch.arange(8).reshape(1, 8)
    with torch.no_grad():
        same_logits = bool(torch.equal(model(x).logits, loaded(x).logits))
    return {
        "safe_open_module": mu.safe_open.__module__,
        "before": before,
        "from_pretrained": _digest(loaded.state_dict()),
        "load_torch_model": _digest(other.state_dict()),
        "tied": loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr(),
        "same_logits": same_logits,
    }


def load_verified(folder: Path, public_key: str) -> dict[str, object]:
    import tensorfile.compat

    tensorfile.compat.install(verify=public_key)
    import transformers

    try:
        model = transformers.GPT2LMHeadModel.from_pretrained(folder / "pretrained")
    except Exception as e:  # the test asserts on the class and message
        return {"error": type(e).__name__, "mro": [c.__name__ for c in type(e).__mro__],
                "message": str(e)}
    return {"loaded": _digest(model.state_dict())}


def main() -> None:
    mode, folder = sys.argv[1], Path(sys.argv[2])
    if mode == "load-verified":
        report = load_verified(folder, sys.argv[3])
    else:
        report = save_and_load(folder, use_tensorfile=mode == "save-tensorfile")
    (folder / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
