"""Models: local models built offline, loading by name/folder/hub id (+ LoRA), SmolLM2 import.

    build_local_models(env, store, force=False, *, out_dir=None, n_tasks=None) -> {role: Path}
    load_model(name_or_path, *, device=None, dtype=None, adapter=None) -> (model, tokenizer)
    resolve_model(name_or_path, store=None) -> str  (store None: folders and hub ids only)
    import_smollm(out, store, gguf=None) -> Path
"""

from core.models.loading import auto_device_dtype, load_model, model_name, resolve_model
from core.models.local import LOCAL_CONFIGS, build_local_models, count_params, local_model_names
from core.models.smollm import import_smollm

__all__ = [
    "LOCAL_CONFIGS", "auto_device_dtype", "build_local_models", "count_params", "import_smollm",
    "load_model", "model_name", "local_model_names", "resolve_model",
]
