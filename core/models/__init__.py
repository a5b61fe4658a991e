"""Models: local presets built offline, loading by name/folder/hub id (+ LoRA), SmolLM2 import.

    build_presets(env="shop", store=None, force=False, *, out_dir=None, n_tasks=None) -> {role: Path}
    load_model(name_or_path, *, device=None, dtype=None, adapter=None) -> (model, tokenizer)
    resolve_model(name_or_path, store=None) -> str
    import_smollm(out=None, store=None) -> Path
"""

from core.models.loading import auto_device_dtype, load_model, model_name, resolve_model
from core.models.presets import PRESET_CONFIGS, build_presets, count_params, preset_names
from core.models.smollm import import_smollm

__all__ = [
    "PRESET_CONFIGS", "auto_device_dtype", "build_presets", "count_params", "import_smollm",
    "load_model", "model_name", "preset_names", "resolve_model",
]
