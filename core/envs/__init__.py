"""Environments by name: `make_env("shop")`, `list_envs()`."""

from core.envs.base import Env, ExpertStep, StepResult, UnknownEnvError, list_envs, make_env, register_env

__all__ = ["Env", "ExpertStep", "StepResult", "UnknownEnvError", "list_envs", "make_env", "register_env"]
