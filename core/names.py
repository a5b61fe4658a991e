"""Short names on the command line: models by method label, worlds by their short name.

`w2stree up` stores its models under long names (`shop-n_products=200-n_categories=10-sft-weak-s0`:
the world, the method, the seed). A command that runs or filters by a model also takes:

* a method's label (`sft-weak`, `sft-strong`, `sft-continued`, `w2s-sft`, `eto-dpo`, `treedpo`,
  `mcts`, as the results table and the eval episodes name them), optionally with `-s<seed>`: that
  method's model in the latest experiment of the command's env (of any env when it names none);
  seed 0's, else the lowest seed's, at the largest K;
* a name that starts with an env's short name (`tinyshop-weak`): the same name under the world's
  long one (`shop-n_products=200-n_categories=10-weak`).

A name that is a registered model, an existing path, a scripted policy (`expert`, ...) or a hub
id (`org/name`) is never rewritten, and a short name that finds nothing stays as given (the command
then says what is missing). `stored_world_hint` points a command that finds nothing in a world at
the worlds the store does hold.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from core.agents.registry import SCRIPTED
from core.envs.base import canonical_env_name, env_aliases, env_slug, parse_env_name
from core.methods import METHODS

if TYPE_CHECKING:
    from core.store import Store


def full_model_name(store: Store, name: str, env: str | None = None) -> tuple[str, str] | None:
    """(the model's full name, where it was found) for the short name `name` (module docstring);
    None when `name` is not short or names nothing stored."""
    if not name or name in SCRIPTED or "/" in name or Path(name).expanduser().exists():
        return None
    if store.find_model(name) is not None:
        return None
    return _by_label(store, name, env) or _by_world(store, name)


def _by_label(store: Store, name: str, env: str | None) -> tuple[str, str] | None:
    labels = {m.label: m.name for m in METHODS}
    m = re.fullmatch(r"(.+?)(?:-s(\d+))?", name)
    if m is None or m.group(1) not in labels:
        return None
    rows = store.results()
    if env:
        rows = rows[rows["env"] == env]
    if rows.empty:
        return None
    latest = rows.sort_values("created_at")["experiment_id"].iloc[-1]
    rows = rows[(rows["experiment_id"] == latest) & (rows["method"] == labels[m.group(1)])
                & rows["model"].fillna("").astype(bool)]
    if m.group(2) is not None:
        rows = rows[rows["seed"] == int(m.group(2))]
    if rows.empty:
        return None
    row = rows.sort_values(["seed", "trajs_per_task"], ascending=[True, False]).iloc[0]
    return str(row["model"]), f"{row['method']} of experiment {latest}"


def _by_world(store: Store, name: str) -> tuple[str, str] | None:
    for short in env_aliases():
        if name.startswith(short + "-"):
            full = env_slug(canonical_env_name(short)) + name[len(short):]
            if store.find_model(full) is not None:
                return full, f"{short} is {canonical_env_name(short)}"
    return None


def short_env_name(env: str) -> str:
    """The short name of a world (`tinyshop`), else `env` itself."""
    return next((short for short in env_aliases() if canonical_env_name(short) == env), env)


def env_option(env: str) -> str:
    """`--env NAME` as a shell takes it: the world's short name where it has one, else its full
    name quoted (`&` and `?` mean something to a shell)."""
    return f"--env {shlex.quote(short_env_name(env))}"


def stored_world_hint(store: Store, env: str) -> str:
    """'; the store holds trees of ... (--env tinyshop)' when `env` has no tree but other worlds
    of its kind do ('' otherwise): `--env shop` after `w2stree up`, whose world is tinyshop."""
    base = parse_env_name(env)[0]
    others = sorted(e for e in store.trees()["env"].unique() if e != env and parse_env_name(e)[0] == base)
    if not others or not store.trees(env=env).empty:
        return ""
    return "; the store holds trees of " + ", ".join(f"{e} ({env_option(e)})" for e in others[:3])
