"""`HFPolicy`: a Hugging Face causal LM answering many live episodes per `generate` call.

* Prompt: the request's chat (`request.messages`) through the tokenizer's chat template with
  `add_generation_prompt=True`.
* History truncation: when the prompt plus `max_new_tokens` exceeds the context, the oldest step
  turns (assistant reply + its observation, in pairs) are dropped first; the prefix — system turn,
  "OK", the one-shot example and the task message — is always kept, and so are the newest turns.
  Only if the prefix plus the last turn alone still do not fit are the oldest tokens cut.
* Batching: requests are sorted by prompt length and answered in chunks of `batch_size`, each with
  one padded `generate` call.
* Shared prefix: the turns before the task message (system turn, "OK", one-shot example) are the
  same for every episode of an env and are most of a short episode's prompt. Their keys/values
  are computed once and reused (`prefix_cache=True`); each row is laid out as
  `[shared prefix][padding][rest of its prompt]`, with positions taken from the attention mask,
  so a row's logits do not depend on the others (tests compare against one-at-a-time runs).
* Chat template: consecutive user turns are merged first (`merge_user_turns`; alternating
  templates such as Llama-2-chat and Mistral reject two in a row), as in training.
* Decoding is exactly what is asked: every decoding field is set explicitly and the model's own
  `generation_config` (Qwen2.5-Instruct ships a repetition penalty) is replaced by a neutral one,
  so "greedy" is the argmax at every step.
* Sampling per request: `request.sampling` may differ inside one batch (the `paper` schedule).
  Generation itself is greedy; a logits processor draws the token of each sampled row (temperature,
  then top-p) and leaves only that token, so greedy rows are exactly greedy. The draw stays on the
  model's device, vectorised over rows (sort for top-p, cumulative sum, inverse-CDF search); only one
  uniform number per sampled row comes from that row's own CPU generator, seeded by (policy seed,
  request seed, task, step), so an episode samples the same way whatever batch it is in, and a
  run is reproducible.
* Reply length: `max_new_tokens` (default: `W2STREE_MAX_NEW_TOKENS`, else 512 for Hugging Face
  models, the release's cap, so an instruct model's thought is not cut before `Action:`; 64 for
  the from-scratch local models, whose replies are a few dozen tokens).
* Stop: at the model's end-of-turn / eos tokens; the reply is the decoded new text, cut before a
  hallucinated `Observation:` line.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.agents.base import Policy, Request, Sampling
from core.agents.prompt import DECISION_FLAG, ONE_SHOT_FLAG, decision_view, merge_user_turns, strip_one_shot
from core.errors import UserError

if TYPE_CHECKING:  # torch/transformers load only once a model is found: a bad name fails at once
    import torch

_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")
MAX_NEW_TOKENS = 512  # the release's cap per turn, for Hugging Face models
LOCAL_MAX_NEW_TOKENS = 64  # from-scratch local models: replies of a few dozen tokens


def default_max_new_tokens(model_config: Any) -> int:
    """New tokens per reply when the caller gives none: `W2STREE_MAX_NEW_TOKENS` when set, else
    64 for the from-scratch local models (prompted without the one-shot example) and 512 otherwise."""
    env = os.environ.get("W2STREE_MAX_NEW_TOKENS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise UserError(f"W2STREE_MAX_NEW_TOKENS={env!r} is invalid; use a positive integer such as 512")
        return int(env)
    return MAX_NEW_TOKENS if getattr(model_config, ONE_SHOT_FLAG, True) else LOCAL_MAX_NEW_TOKENS


class _RowSampler:
    """Per-row temperature/top-p sampling inside a greedy `generate`: a sampled row's scores
    become -inf except for the drawn token; greedy rows (None) pass through untouched."""

    def __init__(self, settings: Sequence[Sampling | None], seeds: Sequence[int]) -> None:
        import torch

        self.rows = [i for i, s in enumerate(settings) if s is not None and not s.greedy]
        self.temps = torch.tensor([settings[i].temperature for i in self.rows])
        self.top_p = torch.tensor([settings[i].top_p for i in self.rows])
        self.gens = [torch.Generator().manual_seed(seeds[i]) for i in self.rows]
        self._on: Any = None  # (rows, temps, top_p) moved to the scores' device once

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        import torch

        if not self.rows:
            return scores
        if self._on is None:
            dev = scores.device
            self._on = (torch.tensor(self.rows, device=dev), self.temps.to(dev)[:, None], self.top_p.to(dev)[:, None])
        rows, temps, top_p = self._on
        probs = (scores[rows].float() / temps).softmax(-1)
        sorted_p, order = probs.sort(-1, descending=True)
        # keep the smallest set of most likely tokens whose mass reaches top_p (at least one)
        drop = ((sorted_p.cumsum(-1) - sorted_p) >= top_p) & (top_p < 1.0)
        # the draw walks the vocabulary in token order, not in sorted order: near-equal
        # probabilities may sort differently in another batch shape, token order never changes
        cdf = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0)).cumsum(-1)
        u = torch.cat([torch.rand(1, generator=g) for g in self.gens]).to(scores.device)
        picks = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=cdf.shape[-1] - 1)
        out = scores.clone()
        out[rows] = float("-inf")
        out[rows[:, None], picks] = 0.0
        return out


class HFPolicy(Policy):
    """A causal LM as a batched ReAct policy (see the module docstring for the exact behaviour)."""

    def __init__(self, model: str, *, device: str | None = None, max_new_tokens: int | None = None,
                 max_context: int | None = None, batch_size: int = 16, seed: int = 0,
                 store=None, adapter: str | None = None, prefix_cache: bool = True) -> None:
        from core.models.loading import load_model, model_name

        if (max_new_tokens is not None and max_new_tokens < 1) or batch_size < 1:
            raise UserError("HFPolicy: max_new_tokens and batch_size must be positive")
        self.name = model_name(model, store)
        self.model, self.tokenizer = load_model(model, device=device, adapter=adapter, merge=True,
                                                store=store)
        if max_new_tokens is None:
            max_new_tokens = default_max_new_tokens(self.model.config)
        if not self.tokenizer.chat_template:
            raise UserError(f"model {self.name!r} has no chat template; use an instruct/chat model "
                            "or one of the local models (`w2stree models build`)")
        self.tokenizer.padding_side = "left"
        self.tokenizer.model_max_length = 1 << 30  # truncation is done here, turn-wise: no warning
        self.max_new_tokens, self.batch_size, self.seed = max_new_tokens, batch_size, seed
        limit = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_context = min(max_context, limit) if max_context else limit
        if self.max_context <= max_new_tokens:
            raise UserError(f"HFPolicy: max_context {self.max_context} leaves no room for the prompt "
                            f"with max_new_tokens {max_new_tokens}")
        self.stop_ids = self._stop_ids()
        from transformers import GenerationConfig

        # generate fills every field left unset from the model's generation_config (a repetition
        # penalty, top-k, suppressed tokens, ...): give it nothing to fill from
        self.model.generation_config = GenerationConfig(eos_token_id=self.stop_ids,
                                                        pad_token_id=self.tokenizer.pad_token_id)
        self.device = next(self.model.parameters()).device
        self.prefix_cache = prefix_cache
        self._forward_params = set(inspect.signature(self.model.forward).parameters)
        # transformers 5.24 calls the cache argument `cache` (`past_key_values` is deprecated); older
        # versions only know `past_key_values`
        self._cache_kw = "cache" if "cache" in self._forward_params else "past_key_values"
        self._kv: dict[tuple[int, ...], Any] = {}
        self._shared_memo: dict[int, tuple[int, ...]] = {}
        self.one_shot = bool(getattr(self.model.config, ONE_SHOT_FLAG, True))
        history = getattr(self.model.config, DECISION_FLAG, None)
        self.decision_history = None if history is None else int(history)

    def _stop_ids(self) -> list[int]:
        tok = self.tokenizer
        ids = {tok.eos_token_id}
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        vocab = tok.get_vocab()
        ids.update(vocab[t] for t in _END_OF_TURN if t in vocab)
        return sorted(i for i in ids if i is not None)

    # -- prompts ---------------------------------------------------------------------------
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

    def _row_seed(self, r: Request) -> int:
        return zlib.crc32(f"{self.seed}/{r.seed}/{r.env}/{r.task_id}/{len(r.history)}".encode())

    def _shared_ids(self, request: Request) -> tuple[int, ...]:
        """Token ids of the request's turns before its task message (system turn + one-shot):
        the part every episode of an env shares, whose keys/values are computed once. A user
        turn right before the task message merges into it (`merge_user_turns`), so it is not shared."""
        n_prefix = max(1, len(request.messages) - 2 * len(request.history))
        shared = merge_user_turns(request.messages[: n_prefix - 1])
        while shared and shared[-1]["role"] == "user":
            shared.pop()
        if not shared:
            return ()
        key = hash(tuple((m["role"], m["content"]) for m in shared))
        ids = self._shared_memo.get(key)
        if ids is None:
            ids = tuple(self.tokenizer.apply_chat_template(shared, return_dict=True)["input_ids"])
            self._shared_memo[key] = ids
        return ids

    # -- generation ------------------------------------------------------------------------
    def view(self, request: Request) -> Request:
        """The request as this model is prompted: one decision (`decision_view`) for models trained
        that way, without the one-shot example for models trained without it, else unchanged."""
        if self.decision_history is not None:
            return dataclasses.replace(request, messages=decision_view(request.messages, self.decision_history))
        if not self.one_shot:
            return dataclasses.replace(request, messages=strip_one_shot(request.messages))
        return request

    def act(self, requests: list[Request]) -> list[str]:
        """One reply per request: grouped by shared prefix, sorted by length, `batch_size` per
        `generate` call. Models trained without the one-shot example are prompted without it, and
        models trained one decision at a time with `decision_view` (`DECISION_FLAG`)."""
        requests = [self.view(r) for r in requests]
        prompts = [self.prompt_ids(r) for r in requests]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (r, p) in enumerate(zip(requests, prompts)):
            shared = self._shared_ids(r) if self.prefix_cache else ()
            if len(p) <= len(shared) or tuple(p[: len(shared)]) != shared:
                shared = ()  # left-truncated prompt: no shared prefix to reuse
            groups.setdefault(shared, []).append(i)
        replies: list[str] = [""] * len(requests)
        for shared, members in groups.items():
            order = sorted(members, key=lambda i: len(prompts[i]))
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                texts = self._generate([prompts[i] for i in chunk], [requests[i] for i in chunk], shared)
                for i, text in zip(chunk, texts):
                    replies[i] = text
        return replies

    def _prefix_kv(self, shared: tuple[int, ...], rows: int):
        """A fresh cache holding the keys/values of `shared`, repeated for `rows` rows."""
        import torch

        cache = self._kv.pop(shared, None)
        if cache is None:
            kwargs = {"logits_to_keep": 1} if "logits_to_keep" in self._forward_params else {}
            out = self.model(input_ids=torch.tensor([shared], device=self.device), use_cache=True, **kwargs)
            cache = getattr(out, "cache", None) or out.past_key_values
        self._kv[shared] = cache  # most recently used last
        while len(self._kv) > 4:
            self._kv.pop(next(iter(self._kv)))
        fresh = copy.deepcopy(cache)  # generate extends the cache in place
        fresh.batch_repeat_interleave(rows)
        return fresh

    def _generate(self, prompts: list[list[int]], requests: list[Request], shared: tuple[int, ...]) -> list[str]:
        """One `generate` call: rows are `shared` (cached), left padding, then each prompt's rest;
        positions come from the attention mask, so the padding is invisible to every row."""
        import torch

        with torch.inference_mode():
            return self._generate_rows(prompts, requests, shared)

    def _generate_rows(self, prompts: list[list[int]], requests: list[Request],
                       shared: tuple[int, ...]) -> list[str]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        pad = self.tokenizer.pad_token_id
        p = len(shared)
        width = p + max(len(q) - p for q in prompts)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        if p:
            input_ids[:, :p] = torch.tensor(shared)
            attention[:, :p] = 1
        for row, q in enumerate(prompts):
            input_ids[row, width - len(q) + p:] = torch.tensor(q[p:])
            attention[row, width - len(q) + p:] = 1
        sampler = _RowSampler([r.sampling for r in requests], [self._row_seed(r) for r in requests])
        # every field explicit; the sampling ones at their neutral library values (greedy search
        # ignores them; `_RowSampler` samples)
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens, min_new_tokens=0, do_sample=False, num_beams=1,
            repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0, length_penalty=1.0,
            temperature=1.0, top_k=50, top_p=1.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0,
            renormalize_logits=False, eos_token_id=self.stop_ids, pad_token_id=pad)
        kwargs = {self._cache_kw: self._prefix_kv(shared, len(prompts))} if p else {}
        out = self.model.generate(
            input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
            generation_config=config, logits_processor=LogitsProcessorList([sampler]), **kwargs,
        )
        return [self._decode(row[width:].tolist()) for row in out]

    def _decode(self, ids: list[int]) -> str:
        stops = set(self.stop_ids)
        cut = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        text = self.tokenizer.decode(ids[:cut], skip_special_tokens=True)
        lines = text.split("\n")
        keep = next((i for i, ln in enumerate(lines) if i and ln.lstrip().lower().startswith("observation:")),
                    len(lines))
        return "\n".join(lines[:keep]).strip()
