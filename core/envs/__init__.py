"""Environments by name: `make_env("shop")`, `make_env("shop?n_products=200")`, `list_envs()`;
`EnvSpec.parse(name, split)` parses a name once (registry name, parameters, canonical name, split)."""

from core.envs.base import (
    Env,
    EnvSpec,
    ExpertStep,
    StepResult,
    UnknownEnvError,
    canonical_env_name,
    env_parameters,
    env_slug,
    known_env,
    list_envs,
    make_env,
    parse_env_name,
    register_env,
)

__all__ = ["Env", "EnvSpec", "ExpertStep", "StepResult", "UnknownEnvError", "canonical_env_name", "env_parameters", "env_slug", "known_env", "list_envs", "make_env",
           "parse_env_name", "register_env"]
