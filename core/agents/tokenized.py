"""`TokenizedPolicy`: the tokenizer-only half of a model policy, shared by the in-process
`core.agents.hf.HFPolicy` and the model-server `core.agents.server.ServerPolicy`, so both prompt a
model with the same token ids and read its reply the same way.

* Prompt: the request's chat (`request.messages`) through the tokenizer's chat template with
  `add_generation_prompt=True`, consecutive user turns merged first (`merge_user_turns`;
  alternating templates such as Llama-2-chat and Mistral reject two in a row), as in training.
* View: models trained one decision at a time see `decision_view` (`DECISION_FLAG` in their
  config), models trained without the one-shot example see the chat without it (`ONE_SHOT_FLAG`).
* History truncation: when the prompt plus `max_new_tokens` exceeds the context, the oldest step
  turns (assistant reply + its observation, in pairs) are dropped first; the prefix — system turn,
  "OK", the one-shot example and the task message — is always kept, and so are the newest turns.
  Only if the prefix plus the last turn alone still do not fit are the oldest tokens cut.
* Reply length: `max_new_tokens` (default: `W2STREE_MAX_NEW_TOKENS`, else 512 for Hugging Face
  models, the release's cap, so an instruct model's thought is not cut before `Action:`; 64 for
  the from-scratch local models, whose replies are a few dozen tokens).
* Stop: at the model's end-of-turn / eos tokens (`stop_ids`); the reply is the decoded new text,
  cut before a hallucinated `Observation:` line (`parse_reply`).
* Row seed: a sampled row draws from a seed of (policy seed, request seed, env, task, step), so an
  episode samples the same way whatever batch (or server) it is in.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Any

from core.agents.base import Policy, Request
from core.agents.prompt import DECISION_FLAG, ONE_SHOT_FLAG, decision_view, merge_user_turns, strip_one_shot
from core.errors import UserError

_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")
MAX_NEW_TOKENS = 512  # the release's cap per turn, for Hugging Face models
LOCAL_MAX_NEW_TOKENS = 64  # from-scratch local models: replies of a few dozen tokens
#: What a hallucinated observation line starts with; a server may stop there (`parse_reply` cuts it).
OBSERVATION_STOP = "\nObservation:"


def default_max_new_tokens(model_config: Any) -> int:
    """New tokens per reply when the caller gives none: `W2STREE_MAX_NEW_TOKENS` when set, else
    64 for the from-scratch local models (prompted without the one-shot example) and 512 otherwise."""
    env = os.environ.get("W2STREE_MAX_NEW_TOKENS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise UserError(f"W2STREE_MAX_NEW_TOKENS={env!r} is invalid; use a positive integer such as 512")
        return int(env)
    return MAX_NEW_TOKENS if getattr(model_config, ONE_SHOT_FLAG, True) else LOCAL_MAX_NEW_TOKENS


def parse_reply(text: str) -> str:
    """A reply's text as the agent's turn: cut before a hallucinated `Observation:` line, stripped."""
    lines = text.split("\n")
    keep = next((i for i, ln in enumerate(lines) if i and ln.lstrip().lower().startswith("observation:")),
                len(lines))
    return "\n".join(lines[:keep]).strip()


class TokenizedPolicy(Policy):
    """A policy that prompts a model through its tokenizer (module docstring); subclasses call
    `_init_tokens` and generate."""

    def _init_tokens(self, kind: str, tokenizer: Any, config: Any, gen_eos: Any, *,
                     max_new_tokens: int | None, max_context: int | None, seed: int) -> None:
        """Set up prompting from a tokenizer, the model's config and its generation_config's
        eos id(s) (`gen_eos`); `kind` names the policy class in errors."""
        if max_new_tokens is None:
            max_new_tokens = default_max_new_tokens(config)
        if max_new_tokens < 1:
            raise UserError(f"{kind}: max_new_tokens must be positive")
        if not tokenizer.chat_template:
            raise UserError(f"model {self.name!r} has no chat template; use an instruct/chat model "
                            "or one of the local models (`w2stree models build`)")
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.tokenizer.model_max_length = 1 << 30  # truncation is done here, turn-wise: no warning
        self.max_new_tokens, self.seed = max_new_tokens, seed
        limit = getattr(config, "max_position_embeddings", None) or 2048
        self.max_context = min(max_context, limit) if max_context else limit
        if self.max_context <= max_new_tokens:
            raise UserError(f"{kind}: max_context {self.max_context} leaves no room for the prompt "
                            f"with max_new_tokens {max_new_tokens}")
        ids = {tokenizer.eos_token_id}
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        vocab = tokenizer.get_vocab()
        ids.update(vocab[t] for t in _END_OF_TURN if t in vocab)
        self.stop_ids = sorted(i for i in ids if i is not None)
        self.one_shot = bool(getattr(config, ONE_SHOT_FLAG, True))
        history = getattr(config, DECISION_FLAG, None)
        self.decision_history = None if history is None else int(history)

    # -- prompts ---------------------------------------------------------------------------
    def view(self, request: Request) -> Request:
        """The request as this model is prompted: one decision (`decision_view`) for models trained
        that way, without the one-shot example for models trained without it, else unchanged."""
        if self.decision_history is not None:
            return dataclasses.replace(request, messages=decision_view(request.messages, self.decision_history))
        if not self.one_shot:
            return dataclasses.replace(request, messages=strip_one_shot(request.messages))
        return request

    def _encode(self, messages: list[dict[str, str]]) -> list[int]:
        out = self.tokenizer.apply_chat_template(merge_user_turns(messages), add_generation_prompt=True,
                                                 return_dict=True)
        return list(out["input_ids"])

    def prompt_ids(self, request: Request) -> list[int]:
        """The prompt token ids of a request, truncated to fit (module docstring)."""
        budget = self.max_context - self.max_new_tokens
        msgs = request.messages
        ids = self._encode(msgs)
        if len(ids) <= budget:
            return ids
        # prefix = everything before the step turns (2 messages per step of history)
        n_prefix = max(1, len(msgs) - 2 * len(request.history))
        n_pairs = (len(msgs) - n_prefix) // 2
        lo, hi = 1, n_pairs - 1  # drop the `k` oldest pairs; the newest pair always stays
        best = None
        while lo <= hi:
            k = (lo + hi) // 2
            cand = self._encode(msgs[:n_prefix] + msgs[n_prefix + 2 * k:])
            if len(cand) <= budget:
                best, hi = cand, k - 1
            else:
                lo = k + 1
        if best is None:
            best = self._encode(msgs[:n_prefix] + msgs[n_prefix + 2 * max(n_pairs - 1, 0):])[-budget:]
        return best

    def row_seed(self, r: Request) -> int:
        """The seed of a request's sampled reply: the same in any batch, on any server."""
        return zlib.crc32(f"{self.seed}/{r.seed}/{r.env}/{r.task_id}/{len(r.history)}".encode())

    # -- replies ---------------------------------------------------------------------------
    def decode_text(self, ids: list[int]) -> str:
        """The text of generated token ids up to the first stop token (special tokens skipped),
        as a completions server returns it."""
        stops = set(self.stop_ids)
        cut = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        return self.tokenizer.decode(ids[:cut], skip_special_tokens=True)

    def _decode(self, ids: list[int]) -> str:
        return parse_reply(self.decode_text(ids))
