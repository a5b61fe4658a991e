"""Training as a job kind: every training run is a job (`core.jobs`) whose process runs the
trainer of its method.

A training job's folder holds, besides what every job's does (`core.jobs.folder`), `data.jsonl`
(its rows, materialised when the job is created: a resume trains on the same rows), `checkpoints/`
(TRL checkpoints every `save_steps` and one at a requested stop, each marked COMPLETE once fully
saved) and `tensorboard/`. Each method registers its job kind here, its trainer chosen by the
method's trainer (`TRAINER_BUILDERS`), so the job process needs no branch per method.

`start_job` runs a training in its own process; `train` runs it in this one (the pipeline's path),
recorded as a job all the same.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.jobs.control import launch_job, sync_job, write_job
from core.jobs.folder import finish, last_checkpoint, new_job_id, now_iso, read_json, running
from core.jobs.kinds import JobKind, register
from core.models.loading import model_name, resolve_model
from core.paths import jobs_dir, models_dir
from core.store import Store
from core.train.config import (
    METHODS,
    RENAMED,
    TrainConfig,
    config_from_dict,
    make_config,
    method,
    validate_fields,
)
from core.train.data import build_rows, check_rows, parse_spec, read_rows, write_rows
from core.train.tensorboard import tensorboard_logs

#: A trainer builder: (config, rows, checkpoint folder, callbacks) -> (trainer, tokenizer).
Builder = Callable[[TrainConfig, list[dict[str, Any]], Path, list[Any]], tuple[Any, Any]]


def _sft(cfg: TrainConfig, rows: list[dict[str, Any]], out: Path, callbacks: list[Any]) -> tuple[Any, Any]:
    from core.train.sft import build_sft_trainer  # heavy (TRL): only in the process that trains

    return build_sft_trainer(cfg, rows, out, callbacks=callbacks)


def _dpo(cfg: TrainConfig, rows: list[dict[str, Any]], out: Path, callbacks: list[Any]) -> tuple[Any, Any]:
    from core.train.dpo import build_dpo_trainer  # heavy (TRL): only in the process that trains

    return build_dpo_trainer(cfg, rows, out, callbacks=callbacks)


#: The trainer of each `Method.trainer` (core.train.config.TRAINERS names their configs).
TRAINER_BUILDERS: dict[str, Builder] = {"sft": _sft, "dpo": _dpo}


# -- creating ---------------------------------------------------------------------------------------

def coerce_config(kind: str, config: TrainConfig | dict[str, Any]) -> TrainConfig:
    """A config object from a config or a dict of overrides (`preset` key honoured)."""
    if isinstance(config, TrainConfig):
        return config
    values = dict(config)
    return make_config(kind, values.pop("preset", "paper"), **values)


def prepare(kind: str, config: TrainConfig | dict[str, Any], store: Store
            ) -> tuple[TrainConfig, list[dict[str, Any]], dict[str, Any]]:
    """Validate everything a job needs before any process starts: field values, the model (and
    reference) exist, the data SPEC parses, names a non-empty set of rows of the right shape.
    Returns (config with resolved model paths, rows, lineage)."""
    cfg = coerce_config(kind, config)
    validate_fields(kind, cfg)
    spec = parse_spec(cfg.data)
    method(kind).check_data(spec.source, spec.arg, cfg.data)
    lineage = {"kind": kind, "base": model_name(cfg.model, store), "data": cfg.data}
    cfg = dataclasses.replace(cfg, model=resolve_model(cfg.model, store))
    if getattr(cfg, "ref", ""):
        lineage["ref"] = model_name(cfg.ref, store)
        cfg = dataclasses.replace(cfg, ref=resolve_model(cfg.ref, store))
    rows = build_rows(spec, store)
    check_rows(rows, preference=method(kind).preference, what=cfg.data)
    lineage["n_examples"] = len(rows)
    return cfg, rows, lineage


def create_job(kind: str, config: TrainConfig | dict[str, Any], store: Store) -> str:
    """Validate, then make the job folder and its `queued` row; returns the job id."""
    kind = method(kind).name  # an earlier name is recorded as the method it became
    cfg, rows, lineage = prepare(kind, config, store)
    job_id = new_job_id(kind)
    output = str(models_dir() / (cfg.output or job_id))
    # max_steps as configured from the start (the trainer reports its own once it runs; by epochs
    # the count is known only then)
    return write_job(kind, dataclasses.asdict(cfg), lineage, store, output,
                     lambda folder: write_rows(rows, folder / "data.jsonl"), job_id=job_id,
                     max_steps=cfg.max_steps if cfg.max_steps > 0 else None)


def start_job(kind: str, config: TrainConfig | dict[str, Any], store: Store,
              detach: bool = True) -> str:
    """Validate `config` (UserError before any process starts), create the job and start its
    process. With `detach=False` wait for it to end (and ingest it). Returns the job id."""
    return launch_job(create_job(kind, config, store), store, detach)


def train(kind: str, config: TrainConfig | dict[str, Any], store: Store) -> Path:
    """Train in this process (the pipeline's path) as a recorded job; returns the output model
    folder, registered in the store with its lineage."""
    job_id = create_job(kind, config, store)
    try:
        return execute(jobs_dir() / job_id, inproc=True)
    finally:
        sync_job(store, job_id)


# -- running (inside the job process, or in-process) ------------------------------------------------

def execute(job_dir: Path, resume: bool = False, inproc: bool = False) -> Path:
    """Run the training job of `job_dir` in this process with its method's trainer; returns the
    output model folder. Writes status, progress and metrics to the folder; on error records
    `failed` with the error and re-raises."""
    meta = read_json(job_dir / "config.json")
    return _run(job_dir, resume, TRAINER_BUILDERS[method(meta["kind"]).trainer], inproc=inproc, meta=meta)


def _run(job_dir: Path, resume: bool, build: Builder, inproc: bool = False,
         meta: dict[str, Any] | None = None) -> Path:
    """The training of `job_dir` with the trainer `build`: the work of every method's job kind."""
    from transformers import PrinterCallback  # heavy: only in the process that trains

    from core.train.common import is_main_process, save_model, setup_threads  # torch: only where it trains
    from core.train.progress import JobProgress  # transformers (its callback): likewise

    meta = meta or read_json(job_dir / "config.json")
    cfg = config_from_dict(meta["kind"], meta["config"])
    main = is_main_process()
    started = read_json(job_dir / "status.json").get("started_at") if main else None
    with running(job_dir, write=main, inproc=inproc, started_at=started or now_iso()):
        setup_threads(cfg)
        progress = JobProgress(job_dir, write=main)
        if not inproc:
            signal.signal(signal.SIGTERM, progress.request_stop)
        ckpt = last_checkpoint(job_dir) if resume else None
        if ckpt is not None:
            print(f"resuming from {ckpt.name}", flush=True)
        with tensorboard_logs(job_dir):
            trainer, tokenizer = build(cfg, read_rows(job_dir / "data.jsonl"), job_dir / "checkpoints", [progress])
        trainer.remove_callback(PrinterCallback)  # JobProgress prints one line per log instead
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
        if progress.stop_requested:
            if main:
                finish(job_dir, "stopped")
            return Path(meta["output_path"])
        out = save_model(trainer, tokenizer, Path(meta["output_path"]), cfg.merge_lora)
        if main:
            finish(job_dir, "succeeded", output_path=str(out),
                   params=sum(p.numel() for p in trainer.model.parameters()))
        return out


# One job kind per method (and per earlier name: jobs recorded under it still resume), its
# trainer chosen by the method.
for _name, _method in [*METHODS.items(), *((old, METHODS[new]) for old, new in RENAMED.items())]:
    register(JobKind(_name, functools.partial(_run, build=TRAINER_BUILDERS[_method.trainer])))
