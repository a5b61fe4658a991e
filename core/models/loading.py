"""Finding and loading causal LMs: store names, local folders, hub ids, LoRA adapters.

Resolution order of `name_or_path`: a name registered in the given store (`w2stree models list`;
the caller's store, from `--db`: none is opened here), an existing local folder, then a Hugging Face hub id. The hub is offline unless the user sets
`HF_HUB_OFFLINE=0`: an offline miss fails at once with one `UserError` instead of transformers'
retries. A folder holding `adapter_config.json` (and no `config.json`) is a PEFT/LoRA adapter:
its base model is resolved the same way and the adapter applied on top.

Device and dtype are automatic: CUDA with bf16 when present (fp16 on cards without bf16), else
CPU with fp32.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError

if TYPE_CHECKING:  # torch loads only when a model is loaded: a bad name fails at once
    import torch

    from core.store import Store

FIX = ("build the local models (`w2stree models build`), pass an existing folder, "
       "or set HF_HUB_OFFLINE=0 with network access to download a hub model")


def hub_offline() -> bool:
    """Whether the hub may not be contacted (the default: HF_HUB_OFFLINE unset counts as 1)."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() not in ("0", "false", "no", "off")


def _registered(name: str, store: Store | None) -> tuple[str, str] | None:
    """(name, path) of a model registered in `store` whose name or path is `name`; None without a
    store (a training job's process: its config holds resolved folders)."""
    return store.find_model(name) if store is not None else None


def _looks_like_path(s: str) -> bool:
    # hub ids are `name` or `org/name`; anything else with separators is meant as a folder
    return s.startswith((".", "/", "~")) or s.count("/") > 1 or "\\" in s


def resolve_model(name_or_path: str, store: Store | None = None) -> str:
    """A local folder or a cached/downloadable hub id for a model name, folder or hub id.

    Raises `UserError` at once when nothing matches (offline hub miss included)."""
    if not name_or_path or not str(name_or_path).strip():
        raise UserError(f"no model given; {FIX}")
    name_or_path = str(name_or_path).strip()
    reg = _registered(name_or_path, store)
    if reg is not None:
        path = Path(reg[1])
        if not path.exists():
            raise UserError(f"model {reg[0]!r} is registered at {path}, which is gone; rebuild it "
                            "(`w2stree models build --force` for local models) or retrain it")
        return str(path)
    local = Path(name_or_path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise UserError(f"model {name_or_path!r} is a file, not a model folder; pass the folder "
                            "holding config.json (GGUF files: `w2stree models import-smollm`)")
        return str(local.resolve())
    if _looks_like_path(name_or_path):
        raise UserError(f"model folder {name_or_path!r} does not exist; {FIX}")
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(name_or_path, "config.json")
    except HFValidationError:
        raise UserError(f"model {name_or_path!r} is neither a registered name, a folder, nor a hub "
                        f"id; {FIX}") from None
    if isinstance(cached, str):
        return name_or_path
    if hub_offline():
        raise UserError(f"model {name_or_path!r} is not a registered name, a folder, or in the "
                        f"local hub cache, and the hub is offline; {FIX}")
    return name_or_path


def model_name(name_or_path: str, store: Store | None = None) -> str:
    """The display name of a model: its store name, else its folder name, else the hub id."""
    reg = _registered(str(name_or_path), store)
    if reg is not None:
        return reg[0]
    local = Path(name_or_path).expanduser()
    return local.resolve().name if local.exists() else str(name_or_path)


def config_value(name_or_path: str, key: str, store: Store | None = None) -> Any:
    """Field `key` of a model's config.json, read without loading the model (an adapter folder:
    its base's); None where the field or a local config.json is absent (a hub id not cached)."""
    folder = Path(resolve_model(name_or_path, store))
    if not (folder / "config.json").is_file() and (folder / "adapter_config.json").is_file():
        folder = Path(resolve_model(_adapter_base(folder), store))
    try:
        return json.loads((folder / "config.json").read_text()).get(key)
    except (OSError, ValueError):
        return None


def auto_device_dtype(device: str | None = None, dtype: torch.dtype | str | None = None
                      ) -> tuple[str, torch.dtype]:
    """CUDA + bf16 (fp16 where bf16 is missing) when present, else CPU + fp32; explicit values win."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""), None)
        if not isinstance(dtype, torch.dtype):
            raise UserError("unknown dtype; use float32, bfloat16 or float16")
    if dtype is None:
        if str(device).startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32
    return str(device), dtype


def _adapter_base(adapter_dir: Path) -> str:
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise UserError(f"adapter {adapter_dir} names no base model (base_model_name_or_path); "
                        "pass the base with --model and the adapter with --adapter")
    return str(base)


def _model_paths(name_or_path: str, adapter: str | None, store: Store | None) -> tuple[str, str | None]:
    """(base model path or hub id, adapter folder or None); an adapter folder passed as the model
    brings its base from adapter_config.json. Raises `UserError` before transformers loads."""
    path = resolve_model(name_or_path, store)  # before importing transformers: a miss fails fast
    if adapter is None and (Path(path) / "adapter_config.json").exists() \
            and not (Path(path) / "config.json").exists():
        adapter, path = path, resolve_model(_adapter_base(Path(path)), store)
    adapter_path = resolve_model(adapter, store) if adapter else None
    if adapter_path and not (Path(adapter_path) / "adapter_config.json").exists():
        raise UserError(f"adapter {adapter!r} has no adapter_config.json; pass a PEFT adapter folder")
    return path, adapter_path


def _tokenizer(path: str, adapter_path: str | None):
    """The tokenizer of a model (an adapter's own when it has one), with a pad token (eos) when it
    has none."""
    from transformers import AutoTokenizer

    tok_src = adapter_path if adapter_path and (Path(adapter_path) / "tokenizer_config.json").exists() else path
    tokenizer = AutoTokenizer.from_pretrained(tok_src, local_files_only=hub_offline())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(name_or_path: str, *, adapter: str | None = None, store: Store | None = None):
    """A model's tokenizer, config and generation_config's eos id(s), without its weights (what a
    policy needs to prompt the model through a server); returns (tokenizer, config, eos)."""
    path, adapter_path = _model_paths(name_or_path, adapter, store)
    from transformers import AutoConfig, GenerationConfig

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=hub_offline())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model {name_or_path!r} from {path}: {str(exc).splitlines()[0]}") from None
    try:
        eos = GenerationConfig.from_pretrained(path, local_files_only=hub_offline()).eos_token_id
    except OSError:  # no generation_config.json: the config's eos is the model's
        eos = getattr(config, "eos_token_id", None)
    return _tokenizer(path, adapter_path), config, eos


def load_model(name_or_path: str, *, device: str | None = None, dtype: torch.dtype | str | None = None,
               adapter: str | None = None, merge: bool = False, store: Store | None = None):
    """Load a causal LM and its tokenizer, in eval mode on `device`; returns (model, tokenizer).

    `adapter` is a PEFT adapter folder (or store name) applied on top; when `name_or_path` itself
    is an adapter folder its base comes from adapter_config.json. `merge=True` folds the adapter
    into the weights (faster inference, no further adapter training). The tokenizer gets a pad
    token (eos) when it has none.
    """
    path, adapter_path = _model_paths(name_or_path, adapter, store)
    from transformers import AutoModelForCausalLM

    device, dtype = auto_device_dtype(device, dtype)
    local_only = hub_offline()
    try:
        # on a GPU the weights load straight onto it (device_map) instead of through CPU memory
        placement = {"device_map": device} if device.startswith("cuda") else {}
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=local_only,
                                                     **placement)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model {name_or_path!r} from {path}: {str(exc).splitlines()[0]}") from None
    tokenizer = _tokenizer(path, adapter_path)
    if adapter_path:
        from peft import PeftModel

        quiet_checkpointing_deprecation()
        model = PeftModel.from_pretrained(model, adapter_path)
        if merge:
            model = model.merge_and_unload()
    model.to(device).eval()
    return model, tokenizer


def quiet_checkpointing_deprecation() -> None:
    """Ignore transformers' FutureWarning that `is_gradient_checkpointing` is deprecated: TRL's
    DPO trainer (every step) and PEFT (wrapping a LoRA model, loading an adapter) read that
    property, not this project, so the warning says nothing a user can act on. Only that message
    is ignored."""
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
