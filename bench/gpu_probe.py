"""GPU probe: what the shipped settings cost for a 7B model on this GPU, without downloading one.

Builds a Qwen2 model at Qwen2.5-7B's shapes (28 layers, hidden 3584, 152k vocabulary) with random
weights, and a byte-level tokenizer of the same vocabulary size with a ChatML template without
generation markers (as Qwen2.5-Instruct's), saves both to a temporary folder, then measures
through the project's own code:

  * LoRA SFT (`paper` preset: r 128 / alpha 256 on q/k/v/o, bf16, activation checkpointing):
    peak GPU memory and tokens/s on ~3.5k-token episodes (prompt + assistant/observation turns);
  * LoRA TreeDPO (same preset, reference = the base under the adapter): the same figures;
  * HFPolicy: greedy replies equal a hand-written argmax loop; batched replies equal one at a time
    (counted, not asserted: bf16 may flip near-ties); ms per generated token, greedy and sampled.

Steps run with grad_accum 1 (the shipped 8 only repeats the same step); the first step is not
timed. Tokens = all tokens of the batch (prompt included), as in `bench/train.py`.

On a machine without CUDA it says so and exits 0. `--cpu --shape tiny` runs the same code on a
tiny model on the CPU (a smoke test of this script, no figures worth keeping).

    python bench/gpu_probe.py [--shape 7b|tiny] [--steps 4] [--episode 3500] [--parts sft dpo policy]
                              [--out probe.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=2048, max_position_embeddings=8192),
}
CHATML = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def build(folder: Path, shape: dict[str, Any], device: str) -> None:
    """A random-weight Qwen2 model and a byte-level BPE tokenizer over its whole vocabulary: the
    256 byte symbols (no merges: one letter = one token, so episode lengths are exact), then
    filler tokens up to the model's vocabulary size."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({f"w{i}": len(vocab) + i for i in range(shape["vocab_size"] - len(vocab))})
    core = Tokenizer(models.BPE(vocab, []))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=specials[1:])
    tok.chat_template = CHATML
    tok.save_pretrained(folder)
    config = Qwen2Config(**shape, tie_word_embeddings=False, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(folder)
    del model


def text(rng: random.Random, n: int) -> str:
    """n tokens of the probe's tokenizer: n random letters (one token each)."""
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(n))


def turns(rng: random.Random, n_tokens: int, n_turns: int = 5) -> list[dict[str, str]]:
    """assistant / observation turns (starting and ending with assistant) of about n_tokens."""
    each = max(4, n_tokens // n_turns - 3)
    return [{"role": "assistant" if k % 2 == 0 else "user", "content": text(rng, each)}
            for k in range(n_turns)]


class Clock(TrainerCallback):
    """Marks the end of every optimizer step (the first mark starts the timed span)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())


def train_probe(kind: str, folder: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory and tokens/s of LoRA SFT or DPO with the `paper` preset."""
    import torch

    from core.train import make_config

    rng = random.Random(1)
    prompt_tokens, completion_tokens = args.episode - args.episode // 7, args.episode // 7
    cfg_kind = "sft" if kind == "sft" else "treedpo"
    cfg = make_config(cfg_kind, "paper", model=str(folder), data="probe", max_steps=args.steps, grad_accum=1,
                      save_steps=10**6, device="cuda" if not args.cpu else "cpu")
    n = cfg.batch_size * args.steps
    prompt = lambda: [{"role": "user", "content": text(rng, prompt_tokens)}]  # noqa: E731
    clock = Clock()
    if kind == "sft":
        from core.train.sft import build_sft_trainer

        rows = [{"prompt": prompt(), "completion": turns(rng, completion_tokens)} for _ in range(n)]
        trainer, _ = build_sft_trainer(cfg, rows, work / kind, callbacks=[clock])
        per_example = [len(r["input_ids"]) for r in trainer.train_dataset]
    else:
        from core.train.dpo import build_dpo_trainer

        rows = [{"prompt": prompt(), "chosen": turns(rng, completion_tokens),
                 "rejected": turns(rng, completion_tokens)} for _ in range(n)]
        trainer, _ = build_dpo_trainer(cfg, rows, work / kind, callbacks=[clock])
        per_example = [2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"])
                       for r in trainer.train_dataset]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = clock.marks[-1] - clock.marks[0]
    tokens = sum(per_example) / len(per_example) * cfg.batch_size * (len(clock.marks) - 1)
    out = {"kind": kind, "batch": cfg.batch_size, "tokens_per_example": round(sum(per_example) / len(per_example)),
           "steps_timed": len(clock.marks) - 1, "tokens_per_s": round(tokens / timed) if timed else None,
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None,
           "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}
    del trainer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def policy_probe(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """HFPolicy: greedy = argmax loop, batched = one at a time, ms per generated token."""
    import dataclasses

    import torch

    from core.agents.base import Request, Sampling
    from core.agents.hf import HFPolicy

    rng = random.Random(2)
    pol = HFPolicy(str(folder), max_new_tokens=args.new_tokens, batch_size=args.gen_batch,
                   device=None if not args.cpu else "cpu")
    reqs = [Request("probe", f"t{i}", "", [{"role": "user", "content": text(rng, args.gen_prompt + 40 * i)}],
                    seed=i) for i in range(args.gen_batch)]

    def argmax(prompt: list[int]) -> list[int]:
        ids, out = list(prompt), []
        with torch.inference_mode():
            for _ in range(args.new_tokens):
                t = int(pol.model(torch.tensor([ids], device=pol.device)).logits[0, -1].argmax())
                if t in pol.stop_ids:
                    break
                ids.append(t)
                out.append(t)
        return out

    def timed(rs: list[Request]) -> tuple[list[str], float]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        replies = pol.act(rs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return replies, time.perf_counter() - t0

    sampled_reqs = [dataclasses.replace(r, sampling=Sampling(1.0, 0.9)) for r in reqs]
    # warm-up at the timed batch shape, both ways: the first call of a shape pays the CUDA allocator
    # and kernel selection (on an H200, a greedy call timed after a 1-request warm-up took 4x)
    pol.act(reqs)
    pol.act(sampled_reqs)
    greedy, t_greedy = timed(reqs)
    _, t_sampled = timed(sampled_reqs)
    manual_ids = [argmax(pol.prompt_ids(r)) for r in reqs]
    single = [pol.act([r])[0] for r in reqs]
    greedy_tokens = sum(len(m) for m in manual_ids) or 1
    # random weights almost never write a stop token: sampled replies run to max_new_tokens too
    return {"requests": len(reqs), "max_new_tokens": args.new_tokens, "greedy_tokens": greedy_tokens,
            "greedy_equals_argmax": sum(a == pol._decode(m) for a, m in zip(greedy, manual_ids)),
            "batched_equals_single": sum(a == b for a, b in zip(greedy, single)),
            "ms_per_token_greedy": round(1000 * t_greedy / greedy_tokens, 3),
            "ms_per_token_sampled": round(1000 * t_sampled / (len(reqs) * args.new_tokens), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per trainer (first not timed)")
    parser.add_argument("--episode", type=int, default=3500, help="tokens per training episode")
    parser.add_argument("--new-tokens", type=int, default=64, help="generated tokens per reply")
    parser.add_argument("--gen-batch", type=int, default=8, help="requests per generation batch")
    parser.add_argument("--gen-prompt", type=int, default=1000, help="prompt tokens of the first request")
    parser.add_argument("--parts", nargs="+", choices=("sft", "dpo", "policy"), default=["sft", "dpo", "policy"],
                        help="what to measure")
    parser.add_argument("--cpu", action="store_true", help="smoke-run on the CPU (use with --shape tiny)")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.cpu:
        print("gpu_probe: needs a CUDA GPU and none is visible here; nothing measured "
              "(`--cpu --shape tiny` smoke-runs this script on the CPU)")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    shape = SHAPES[args.shape]
    device = "cpu" if args.cpu else "cuda"
    results: dict[str, Any] = {"shape": args.shape, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                               "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="gpu-probe-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        build(work / "model", shape, device)
        results["build_s"] = round(time.perf_counter() - t0, 1)
        for kind in ("sft", "dpo"):
            if kind in args.parts:
                results[kind] = train_probe(kind, work / "model", work, args)
                print(kind, results[kind], flush=True)
        if "policy" in args.parts:
            results["policy"] = policy_probe(work / "model", args)
            print("policy", results["policy"], flush=True)
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
