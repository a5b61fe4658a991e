"""`HFPolicy`: a Hugging Face causal LM answering many live episodes per `generate` call.

* Prompt, truncation, the one-decision view, reply length, stop tokens and reading the reply:
  `core.agents.tokenized.TokenizedPolicy` (shared with the model-server policy).
* Batching: requests are sorted by prompt length and answered in chunks of `batch_size`, each with
  one padded `generate` call.
* Shared prefix: the turns before the task message (system turn, "OK", one-shot example) are the
  same for every episode of an env and are most of a short episode's prompt. Their keys/values
  are computed once and reused (`prefix_cache=True`); each row is laid out as
  `[shared prefix][padding][rest of its prompt]`, with positions taken from the attention mask,
  so a row's logits do not depend on the others (tests compare against one-at-a-time runs).
* Decoding is exactly what is asked: every decoding field is set explicitly and the model's own
  `generation_config` (Qwen2.5-Instruct ships a repetition penalty) is replaced by a neutral one,
  so "greedy" is the argmax at every step.
* Sampling per request: `request.sampling` may differ inside one batch (the `paper` schedule).
  Generation itself is greedy; a logits processor draws the token of each sampled row (temperature,
  then top-p) and leaves only that token, so greedy rows are exactly greedy. The draw stays on the
  model's device, vectorised over rows (sort for top-p, cumulative sum, inverse-CDF search); only one
  uniform number per sampled row comes from that row's own CPU generator, seeded by `row_seed`
  (policy seed, request seed, task, step), so an episode samples the same way whatever batch it is
  in, and a run is reproducible.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.agents.base import Request, Sampling
from core.agents.prompt import merge_user_turns
from core.agents.tokenized import TokenizedPolicy
from core.errors import UserError
from core.models.loading import load_model, model_name

if TYPE_CHECKING:  # torch/transformers load only once a model is found: a bad name fails at once
    import torch


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


class HFPolicy(TokenizedPolicy):
    """A causal LM as a batched ReAct policy (see the module docstring for the exact behaviour)."""

    def __init__(self, model: str, *, device: str | None = None, max_new_tokens: int | None = None,
                 max_context: int | None = None, batch_size: int = 16, seed: int = 0,
                 store=None, adapter: str | None = None, prefix_cache: bool = True) -> None:
        if batch_size < 1:
            raise UserError("HFPolicy: batch_size must be positive")
        self.name = model_name(model, store)
        self.model, tokenizer = load_model(model, device=device, adapter=adapter, merge=True, store=store)
        self._init_tokens("HFPolicy", tokenizer, self.model.config,
                          getattr(self.model.generation_config, "eos_token_id", None),
                          max_new_tokens=max_new_tokens, max_context=max_context, seed=seed)
        self.batch_size = batch_size
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
            rows = self.generate_ids([prompts[i] for i in members], [requests[i].sampling for i in members],
                                     [self.row_seed(requests[i]) for i in members], shared)
            for i, ids in zip(members, rows):
                replies[i] = self._decode(ids)
        return replies

    def generate_ids(self, prompts: list[list[int]], settings: Sequence[Sampling], seeds: Sequence[int],
                     shared: tuple[int, ...] = (), max_new_tokens: int | None = None) -> list[list[int]]:
        """The new token ids of each prompt (padding after a stop token included), sampled with its
        setting and seed; prompts sorted by length, `batch_size` per `generate` call. `shared`: a
        prefix every prompt starts with, whose keys/values are cached (`prefix_cache`)."""
        out: list[list[int]] = [[] for _ in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            rows = self._generate([prompts[i] for i in chunk], [settings[i] for i in chunk],
                                  [seeds[i] for i in chunk], shared, max_new_tokens or self.max_new_tokens)
            for i, ids in zip(chunk, rows):
                out[i] = ids
        return out

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

    def _generate(self, prompts: list[list[int]], settings: list[Sampling], seeds: list[int],
                  shared: tuple[int, ...], max_new_tokens: int) -> list[list[int]]:
        """One `generate` call: rows are `shared` (cached), left padding, then each prompt's rest;
        positions come from the attention mask, so the padding is invisible to every row."""
        import torch

        with torch.inference_mode():
            return self._generate_rows(prompts, settings, seeds, shared, max_new_tokens)

    def _generate_rows(self, prompts: list[list[int]], settings: list[Sampling], seeds: list[int],
                       shared: tuple[int, ...], max_new_tokens: int) -> list[list[int]]:
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
        sampler = _RowSampler(settings, seeds)
        # every field explicit; the sampling ones at their neutral library values (greedy search
        # ignores them; `_RowSampler` samples)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, min_new_tokens=0, do_sample=False, num_beams=1,
            repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0, length_penalty=1.0,
            temperature=1.0, top_k=50, top_p=1.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0,
            renormalize_logits=False, eos_token_id=self.stop_ids, pad_token_id=pad)
        kwargs = {self._cache_kw: self._prefix_kv(shared, len(prompts))} if p else {}
        out = self.model.generate(
            input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
            generation_config=config, logits_processor=LogitsProcessorList([sampler]), **kwargs,
        )
        return [row[width:].tolist() for row in out]
