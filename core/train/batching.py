"""Length-sorted micro-batches: the same random batch per optimizer step, padded in slices.

A padded batch costs its longest row times its size. The shop's one-decision rows run from ~60
tokens (the first search) to ~420 (a results page), so a random batch of 32 holds 2.1x its real
tokens, and attention, quadratic in the padded length, 3.4x its real work (measured on the tiny
scale's expert decision rows). With `micro_batch` set, each optimizer step still draws a random
batch, but its rows are sorted by length and run as micro-batches with gradient accumulation: the
same rows and the same gradient (SFT normalises the loss over the whole step's tokens; DPO
averages equal micro-batches, so only an epoch's short last step weighs its pairs unequally) with
1.16x padding in micro-batches of 8. Grouping rows of similar length across steps (transformers'
`group_by_length`) pads even less but makes each step see one kind of decision; measured on the
tiny scale it learned more slowly per step, so this module keeps the steps random.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler


class SortedStepSampler(Sampler[int]):
    """A random permutation of the rows, cut into steps of `step_rows` rows, each step's rows sorted
    by length, so that the loader's consecutive micro-batches of one step hold rows of similar
    length. The order depends only on `seed` and the epoch (`set_epoch`): a resumed run skips
    exactly the micro-batches it already trained on."""

    def __init__(self, lengths: Sequence[int], step_rows: int, seed: int = 0) -> None:
        self.lengths = list(lengths)
        self.step_rows = step_rows
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        for start in range(0, len(perm), self.step_rows):
            yield from sorted(perm[start:start + self.step_rows], key=self.lengths.__getitem__)


def row_lengths(dataset: Any) -> list[int]:
    """Token lengths of a tokenized SFT (`input_ids`) or preference dataset (prompt plus the longer
    side; a pair with decision columns: the tokens of all its decisions, `core.train.decision_dpo`)."""
    if "input_ids" in dataset.column_names:
        return [len(ids) for ids in dataset["input_ids"]]
    if "decision_prompt_ids" in dataset.column_names:
        return [sum(map(len, p)) + sum(map(len, c))
                for p, c in zip(dataset["decision_prompt_ids"], dataset["decision_completion_ids"])]
    return [len(p) + max(len(c), len(r))
            for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])]


class SortedStepTrainer:
    """Mixin for a transformers `Trainer` subclass: rows from `SortedStepSampler`, one step's rows
    being `per_device_train_batch_size x gradient_accumulation_steps`."""

    args: Any
    train_dataset: Any

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler[int]:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        step_rows = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
        return SortedStepSampler(row_lengths(dataset), step_rows, seed=self.args.seed)
