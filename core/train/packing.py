"""Packed preference sequences: every shared prefix computed once (pure functions, no model).

A DPO batch is a set of token sequences (each pair's prompt + chosen and prompt + rejected, or
under the one-decision prompt each decision's prompt + completion), and each *side* (a pair's
chosen or rejected answer) scores some of their tokens. Causal attention makes a token's hidden
state a function of its own prefix only, so sequences that start with the same tokens can share
those positions: they are laid out as a token trie, each distinct prefix once, with a 4-D boolean
attention mask that lets a position see exactly its own root-to-position path and position ids
equal to its depth (its position in the unpacked sequence). Every hidden state, and so every
log-probability, is then what the unpacked sequence gives, up to float rounding.

Layouts (`pack`):

  pair  one packed row per pair: its prompt once, then the chosen side, then the rejected side
        (positions restarting at the prompt's end); tokens the two sides start with in common are
        shared too. Under the one-decision prompt a pair's decisions share whatever prefix their
        prompts share (the first decision's prompt is the same on both sides; later decisions
        have their own prompts).
  tree  rows that are each one trie over the sequences of several pairs: pairs cut at one node
        share its whole prefix, continuations below a node share theirs, and every pair shares
        the common system / one-shot prefix.

Both fill a row while it stays within `budget` positions (default: twice the batch's longest
sequence), then start another (a sequence longer than the budget gets a row of its own): the
mask is dense, so a row's attention costs its length squared whatever it masks, and one long row
of short sequences would cost more than the sequences apart.

The log-probability of the token at trie node j is read from the logits of its parent (the
previous token of its own path), not of position j - 1: `scored_node` / `scored_parent` list
each scored node once (shared completion tokens are computed once and read by every side that
scores them), and `per_side` gathers those values into one row per side, in each side's sequence
order, as TRL's per-sequence tensors hold them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.train.config import PACKINGS as MODES


@dataclass(frozen=True)
class Scored:
    """One sequence to pack: its token ids, which positions its side scores (position 0 never: no
    token predicts it), the side it belongs to (0 .. n_sides - 1) and its pair (`group`)."""

    ids: Sequence[int]
    scored: Sequence[int]  # 0/1 per position (a loss mask as TRL's completion_mask holds it)
    side: int
    group: int


@dataclass
class Packing:
    """Packed rows (R rows of N positions) and where each side's scored tokens are in them.

    `attention_mask[r, 0, i, j]` is True iff position j is on position i's root-to-i path
    (itself included; a padding position sees itself only). `scored_node[t]` / `scored_parent[t]`
    are flat indices (`r * N + j`) of scored token t and of the position whose logits predict it;
    `side_index[s, k]` is the index t of side s's k-th scored token (`side_mask` False past its
    count)."""

    input_ids: torch.Tensor  # (R, N) long, padding = pad_id
    position_ids: torch.Tensor  # (R, N) long: depth in the node's own path
    attention_mask: torch.Tensor  # (R, 1, N, N) bool
    valid: torch.Tensor  # (R, N) bool: real (not padding) positions
    scored_node: torch.Tensor  # (T,) long
    scored_parent: torch.Tensor  # (T,) long
    side_index: torch.Tensor  # (S, W) long
    side_mask: torch.Tensor  # (S, W) bool

    @property
    def tokens(self) -> int:
        """Real positions computed (the packed tokens, without padding)."""
        return int(self.valid.sum())


class _Trie:
    """The positions of one packed row: a node per distinct prefix, parents before children."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.parent: list[int] = []
        self.depth: list[int] = []
        self.child: dict[tuple[int, int], int] = {}

    def insert(self, ids: Sequence[int]) -> list[int]:
        """Insert a sequence; returns the node of each of its positions."""
        node, path = -1, []
        for tok in ids:
            nxt = self.child.get((node, tok))
            if nxt is None:
                nxt = self.child[node, tok] = len(self.ids)
                self.ids.append(int(tok))
                self.depth.append(self.depth[node] + 1 if node >= 0 else 0)
                self.parent.append(node)
            node = nxt
            path.append(node)
        return path

    def rollback(self, size: int) -> None:
        """Forget the nodes from `size` on (the last insertions)."""
        for node in range(size, len(self.ids)):
            del self.child[self.parent[node], self.ids[node]]
        del self.ids[size:], self.parent[size:], self.depth[size:]


def ancestor_mask(parent: Sequence[int], width: int) -> np.ndarray:
    """(width, width) bool: row i marks i and its ancestors (`parent[i]` < i, -1 for a root);
    positions past `len(parent)` (padding) mark themselves only."""
    anc = np.zeros((width, width), dtype=bool)
    for i, p in enumerate(parent):
        if p >= 0:
            anc[i] = anc[p]
        anc[i, i] = True
    for i in range(len(parent), width):
        anc[i, i] = True
    return anc


def _rows(seqs: Sequence[Scored], mode: str, budget: int) -> tuple[list[_Trie], list[tuple[int, list[int]]]]:
    """The packed rows (tries) and each sequence's (row, node path). A pair starts a row (`pair`),
    or joins the current row whole when it fits within `budget` positions, else starts one
    (`tree`: so a pair never costs more positions than under `pair`); inside its rows a pair's
    sequences start another row when one would overflow the budget."""
    if mode not in MODES[1:]:
        raise ValueError(f"unknown packing {mode!r}; use one of {', '.join(MODES[1:])}")
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        groups.setdefault(s.group, []).append(i)
    rows: list[_Trie] = []
    where: dict[int, tuple[int, list[int]]] = {}
    for members in groups.values():
        if mode == "tree" and rows:
            size = len(rows[-1].ids)
            paths = [rows[-1].insert(seqs[i].ids) for i in members]
            if len(rows[-1].ids) <= budget:
                where.update((i, (len(rows) - 1, path)) for i, path in zip(members, paths))
                continue
            rows[-1].rollback(size)
        for k, i in enumerate(members):
            if k:
                size = len(rows[-1].ids)
                path = rows[-1].insert(seqs[i].ids)
                if len(rows[-1].ids) <= budget:
                    where[i] = (len(rows) - 1, path)
                    continue
                rows[-1].rollback(size)
            rows.append(_Trie())
            where[i] = (len(rows) - 1, rows[-1].insert(seqs[i].ids))
    return rows, [where[i] for i in range(len(seqs))]


def pack(seqs: Sequence[Scored], n_sides: int, mode: str, budget: int = 0, pad_id: int = 0) -> Packing:
    """Pack `seqs` (see the module docstring for `mode`, `pair` or `tree`; `budget`: positions per
    row, 0 for twice the longest sequence). Side s's scored tokens are, in order, those of its
    sequences in `seqs` order, each sequence's in position order."""
    rows, where = _rows(seqs, mode, budget or 2 * max(len(s.ids) for s in seqs))
    width = max(len(trie.ids) for trie in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    depth = torch.zeros((len(rows), width), dtype=torch.long)
    valid = torch.zeros((len(rows), width), dtype=torch.bool)
    mask = np.zeros((len(rows), 1, width, width), dtype=bool)
    for r, trie in enumerate(rows):
        n = len(trie.ids)
        ids[r, :n] = torch.tensor(trie.ids)
        depth[r, :n] = torch.tensor(trie.depth)
        valid[r, :n] = True
        mask[r, 0] = ancestor_mask(trie.parent, width)
    found: dict[tuple[int, int], int] = {}  # (row, node) -> scored-token index
    nodes: list[int] = []
    parents: list[int] = []
    sides: list[list[int]] = [[] for _ in range(n_sides)]
    for seq, (r, path) in zip(seqs, where):
        for p in range(1, len(path)):
            if seq.scored[p]:
                t = found.setdefault((r, path[p]), len(nodes))
                if t == len(nodes):
                    nodes.append(r * width + path[p])
                    parents.append(r * width + path[p - 1])
                sides[seq.side].append(t)
    side_width = max(1, max(map(len, sides)))
    side_index = torch.zeros((n_sides, side_width), dtype=torch.long)
    side_mask = torch.zeros((n_sides, side_width), dtype=torch.bool)
    for s, tokens in enumerate(sides):
        side_index[s, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        side_mask[s, :len(tokens)] = True
    return Packing(input_ids=ids, position_ids=depth, attention_mask=torch.from_numpy(mask), valid=valid,
                   scored_node=torch.tensor(nodes, dtype=torch.long), scored_parent=torch.tensor(parents, dtype=torch.long),
                   side_index=side_index, side_mask=side_mask)


def pair_sequences(prompt: Sequence[int], chosen: Sequence[int], rejected: Sequence[int], pair: int, n_pairs: int,
                   chosen_mask: Sequence[int] | None = None, rejected_mask: Sequence[int] | None = None,
                   cut: Callable[[list[int]], list[int]] = list) -> list[Scored]:
    """A TRL-tokenized pair as two sequences: prompt + side, scoring the side's tokens (where its
    loss mask is 1), truncated by `cut` as TRL truncates. Sides are numbered as TRL stacks them:
    pair b's chosen side b, its rejected side `n_pairs + b`."""
    out = []
    for s, (side, loss) in enumerate(((chosen, chosen_mask), (rejected, rejected_mask))):
        loss = [1] * len(side) if loss is None else list(loss)
        out.append(Scored(ids=cut(list(prompt) + list(side)), scored=cut([0] * len(prompt) + loss),
                          side=s * n_pairs + pair, group=pair))
    return out


def parent_states(states: torch.Tensor, packing: Packing) -> torch.Tensor:
    """(T, ...) the row of `states` (R, N, ...: hidden states or logits of the packed rows) that
    predicts each scored token: its parent's, the previous token of its own path."""
    return states.reshape(-1, *states.shape[2:])[packing.scored_parent.to(states.device)]


def scored_targets(packing: Packing) -> torch.Tensor:
    """(T,) the id of each scored token."""
    return packing.input_ids.reshape(-1)[packing.scored_node.to(packing.input_ids.device)]


def per_side(values: torch.Tensor, packing: Packing) -> torch.Tensor:
    """Per-token values (T,) as one row per side (S, W): each side's scored tokens in order, then
    zeros (False for a bool tensor). A token shared by several sides appears in each of them."""
    index = packing.side_index.to(values.device)
    picked = values[index] if values.numel() else values.new_zeros(index.shape)
    return picked.masked_fill(~packing.side_mask.to(values.device), 0)
