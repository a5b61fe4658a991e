"""Training the strong model: SFT, MCTS-SFT, TreeDPO and ETO-DPO with TRL + PEFT, as jobs.

Public API (the CLI, the dashboard's Train page and the pipeline use these):

* `train(kind, config, store) -> Path`: train in this process (recorded as a job), return the model.
* `start_job(kind, config, store, detach=True) -> job_id`: the same in a separate process.
* `job_status`, `job_alive`, `job_log_tail`, `sync_job`, `stop_job`: those of every job (`core.jobs`,
  where the rest of the job API is), here for the pipeline's units (`core.work`).
* `METHODS` / `method(name)`: the training methods (trainer + data + config class).
* `make_config(method, preset, **overrides)`, `SFTTrainConfig`, `DPOTrainConfig`, `PRESETS`.

Heavy libraries (torch, TRL) load only when a trainer is built, so the dashboard imports this
module cheaply.
"""

from core.fields import field_help
from core.jobs import job_alive, job_log_tail, job_status, stop_job, sync_job
from core.train.config import (
    METHODS,
    PRESETS,
    DPOTrainConfig,
    SFTTrainConfig,
    TrainConfig,
    config_class,
    make_config,
    method,
)
from core.train.jobs import start_job, train

__all__ = [
    "METHODS", "PRESETS", "DPOTrainConfig", "SFTTrainConfig", "TrainConfig", "config_class", "field_help",
    "job_alive", "job_log_tail", "job_status", "make_config", "method", "start_job", "stop_job", "sync_job", "train",
]
