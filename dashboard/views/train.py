"""Train: a form for a job of any training method (TreeDPO, ETO-DPO, MCTS, SFT; validated, with
the equivalent `w2stree train` command), the jobs table, and the selected job followed live:
progress with ETA, loss and DPO metric charts, the log tail, GPU memory on CUDA, and Stop.

Job state lives in the job folders and the store, read through core.jobs, never only in this browser
session: a reload or a second tab finds running jobs again. The live part is a fragment that
reruns on a timer, so the page never blocks while a job trains.
"""

from __future__ import annotations

import streamlit as st

from core.cli.train import command_line
from core.errors import UserError
from core.fields import field_help
from core.jobs import ACTIVE, gone_job, job_log_tail, job_metrics, job_status, list_jobs, stop_job
from core.train.config import DEVICES, METHODS, PRESETS, make_config, method, validate_fields
from core.train.jobs import start_job
from dashboard import data, figures, train_defaults, train_shaping, ui

REFRESH_S = 2.0


def _pick(options: list[str], *hints: str) -> int:
    """Index of the first option containing one of the hints (in hint order), else 0."""
    for h in hints:
        for i, o in enumerate(options):
            if h in o:
                return i
    return 0


def job_form(path: str, changes: int) -> None:
    """The new-job form: choices -> config -> validation -> command -> Start."""
    summary = data.summary(path, changes)
    models = data.models(path, changes)
    if summary.empty or models.empty:
        ui.empty("Training needs data and a model: fill the store (Overview page or `w2stree up`) "
                 "and build models with `w2stree models build`.")
        return
    kind = st.segmented_control("Method", list(METHODS), format_func=lambda m: METHODS[m].label,
                                default="treedpo", required=True, key="train_kind")
    chosen = method(kind)
    names = models["name"].tolist()
    small = bool((models["params"].fillna(0) < 100_000_000).all())
    help_ = field_help(chosen.config_class)
    c = st.columns(3)
    presets = sorted(PRESETS, key=lambda p: p != "tiny")
    preset = c[0].selectbox("Preset", presets, index=0 if small else 1, key="train_preset",
                            help=help_["preset"])
    # TreeDPO and MCTS start from the strong SFT model (the paper's setting), SFT from a base model.
    hints = ("strong",) if kind == "sft" else ("sft-strong", "strong-sft", "strong")
    model = c[1].selectbox("Base model", names, index=_pick(names, *hints), key=f"train_model_{kind}",
                           accept_new_options=True, help=help_["model"] + " (type a path or hub id)")
    ref = ""
    if chosen.preference:
        refs = ["(its own starting weights)", *names]
        ref_pick = c[2].selectbox("Reference model", refs, index=_pick(refs, "sft-weak", "weak-sft", "weak"),
                                  key="train_ref", help=help_["ref"])
        ref = "" if ref_pick == refs[0] else ref_pick

    st.markdown("**Training data**")
    c = st.columns(4)
    envs = summary.sort_values("trajectories", ascending=False, kind="stable")["env"].tolist()
    env = c[0].selectbox("Environment", envs, key="train_env")
    arg, margin = "", 0.0
    # the choices the method's data forms leave (core.train.config.METHODS)
    if "pairs" in chosen.sources:
        source = "pairs"
        grans = [form.rsplit(":", 1)[1] for form in chosen.data]
        arg = c[1].selectbox("Pair granularity", grans, key=f"train_gran_{kind}")
        margin = c[2].number_input("Min margin", 0.0, 1.0, 0.0, 0.05, key="train_margin")
    elif "best-paths" in chosen.sources:
        source = "best-paths"
        c[1].caption("MCTS best path of every tree of the environment")
    else:
        who = ["expert demonstrations", *(f"successes of {m}" for m in data.explorers(path, changes, env))]
        pick = c[1].selectbox("Demonstrations", who, key="train_sft_source")
        source, arg = ("expert", "") if pick == who[0] else ("successes", pick.removeprefix("successes of "))
    tasks = c[3].number_input("Tasks (0 = all)", 0, 100_000, 0, key="train_tasks")
    spec = train_shaping.data_spec(source, env, arg, tasks, margin)
    st.caption("data spec")
    st.code(spec, language=None)

    st.markdown("**Optimisation**")
    base, scaled, settings = train_defaults.form_defaults(kind, preset, source,
                                                          model in train_defaults.weak_models(models))
    if scaled:
        st.caption(f"defaults: the pipeline's tiny scale for this training (`SCALES['tiny'].{scaled}`)")
    k = f"{kind}_{preset}_{scaled}"  # defaults follow the preset, method and training
    c = st.columns(4)
    epochs = c[0].number_input("Epochs", 0.1, 100.0, float(base.epochs), 0.5, key=f"train_epochs_{k}")
    lr = c[1].number_input("Learning rate", 1e-8, 0.99, float(base.lr), float(f"{base.lr / 10:.0e}"), "%.1e",
                           key=f"train_lr_{k}", help=help_["lr"])
    beta = None
    if chosen.preference:
        beta = c[2].number_input("β", 0.001, 100.0, float(base.beta), 0.05, key=f"train_beta_{k}",
                                 help=help_["beta"])
    lora = c[3].toggle("LoRA", value=base.lora, key=f"train_lora_{k}", help=help_["lora"])
    # the scale's settings that have no field here (save_steps) go with the job too
    overrides = {**settings, "model": model or "", "data": spec, "epochs": epochs, "lr": lr, "lora": lora}
    if ref:
        overrides["ref"] = ref
    if beta is not None:
        overrides["beta"] = beta
    with st.expander("More settings"):
        c = st.columns(4)
        if lora:
            overrides["lora_r"] = c[0].number_input("LoRA r", 1, 4096, base.lora_r, key=f"train_r_{k}")
            overrides["lora_alpha"] = c[1].number_input("LoRA α", 1, 8192, base.lora_alpha,
                                                        key=f"train_alpha_{k}")
        overrides["batch_size"] = c[2].number_input("Batch size", 1, 4096, base.batch_size,
                                                    key=f"train_bs_{k}")
        overrides["grad_accum"] = c[3].number_input("Grad accumulation", 1, 4096, base.grad_accum,
                                                    key=f"train_ga_{k}")
        c = st.columns(4)
        overrides["max_steps"] = c[0].number_input("Max steps (-1 = by epochs)", -1, 10**7, base.max_steps,
                                                   key=f"train_steps_{k}")
        overrides["device"] = c[1].selectbox("Device", DEVICES, key="train_device")
        overrides["output"] = c[2].text_input("Output model name", "", key="train_output",
                                              help=help_["output"]).strip()
    try:
        cfg = make_config(kind, preset, **overrides)
        validate_fields(kind, cfg)
    except UserError as exc:
        ui.error(exc)
        return
    st.caption("equivalent command")
    st.code(command_line(kind, cfg), language="bash", wrap_lines=True)
    n_examples, why_empty = data.example_count(path, changes, spec)
    blocked = train_shaping.empty_data_reason(source, env, arg, n_examples, why_empty)
    if blocked:
        st.warning(ui.plain(blocked), icon=":material/block:")
    else:
        history = data.decision_history(path, changes, model or "")
        n_rows = None if history is None else data.decision_row_count(path, changes, spec, history)
        st.caption(train_defaults.example_caption(n_examples, history is not None, n_rows, model or ""))
    if st.button("Start", type="primary", icon=":material/play_arrow:", key="train_start",
                 disabled=bool(blocked), help=blocked):
        try:
            with st.spinner("checking the data and starting the job"):
                job_id = start_job(kind, cfg, data.store())
        except UserError as exc:
            ui.error(exc)
            return
        st.session_state["train_job"] = job_id
        st.toast(ui.plain(f"started {job_id}"))


def stop(job_id: str) -> None:
    """Stop button: the job checkpoints at the end of its current step and exits (`stop_job`)."""
    stop_job(job_id, data.store())


@st.fragment(run_every=REFRESH_S)
def jobs_live() -> None:
    """The jobs table and the selected job, refreshed every REFRESH_S seconds."""
    store = data.store()
    jobs = list_jobs(store)
    if jobs.empty:
        ui.empty("No jobs yet: fill the form above and press Start.")
        return
    show = [c for c in ("job_id", "kind", "status", "step", "max_steps", "created_at", "finished_at",
                        "output_path", "error") if c in jobs.columns]
    st.dataframe(jobs[show], hide_index=True, height=min(38 + 35 * len(jobs), 250))
    ids = jobs["job_id"].tolist()
    active = jobs[jobs["status"].isin(ACTIVE)]["job_id"].tolist()
    ui.keep_choice("train_job", ids, (active or ids)[0])
    if "train_job" not in st.session_state:  # a reload or a second tab: follow the running job
        st.session_state["train_job"] = (active or ids)[0]
    job_id = st.selectbox("Job", ids, key="train_job")
    try:
        status = job_status(job_id)
    except UserError as exc:
        row = gone_job(store, job_id)  # its folder was removed: the stored row says so
        ui.error(f"job {job_id}: {row['error'] if row else exc}")
        return
    c = st.columns([4, 1])
    c[0].progress(float(status.get("progress") or 0.0), text=ui.plain(train_shaping.progress_text(status)))
    if status.get("status") in ACTIVE:
        c[1].button("Stop", icon=":material/stop:", key="train_stop", on_click=stop,
                    args=(job_id,), help="checkpoint, then end the job's processes")
    if status.get("error"):
        ui.error(str(status["error"]).splitlines()[-1][:500])
    if status.get("status") in ACTIVE:
        for i, (used, total) in enumerate(data.gpu_memory()):
            st.progress(used / max(total, 1), text=f"GPU {i} memory {used} / {total} MiB")
    metrics = job_metrics(job_id, store)
    names = metrics["name"].unique().tolist() if not metrics.empty else []
    rewards, acc = train_shaping.dpo_metric_names(names)
    charts = [(train_shaping.LOSS_METRICS, "Loss"), (rewards, "DPO rewards"), (acc, "Preference accuracy")]
    figs = [(t, figures.metrics_figure(metrics, n, t)) for n, t in charts if n]
    figs = [(t, f) for t, f in figs if f is not None]
    if not figs:
        st.caption("No metrics logged yet.")
    for col, (title, fig) in zip(st.columns(max(len(figs), 1)), figs, strict=False):
        col.plotly_chart(fig, key=f"train_fig_{title}")
    st.caption("log (last 40 lines)")
    st.code(job_log_tail(job_id, 40) or "(empty)", language=None)


def main() -> None:
    st.title("Train")
    path, changes = data.key()
    with st.container(border=True):
        st.subheader("New job")
        job_form(path, changes)
    st.subheader("Jobs")
    jobs_live()


main()
