"""Train tab: a form generated from TrainConfig, the job queue, a live loss plot, the run table."""

from __future__ import annotations

import sys
import time

import gradio as gr

from garage import access, catalog, device
from garage.config import TrainConfig
from garage.data.store import list_datasets
from garage.errors import GarageError
from garage.hub import auth
from garage.hub.publish import pushed_lines
from garage.jobs import hf_jobs, service
from garage.jobs.worker import get_worker
from garage.train.presets import full_preset, gsm8k_preset, preset_moves, size_preset
from garage.ui.forms import NO_RUN, RUN_PICKERS, build_form, form_updates
from garage.ui.session import failure_stays, user_errors, user_of

SKIP = ("model", "dataset")
FIELD_NAMES = [n for n in TrainConfig.__dataclass_fields__ if n not in SKIP]  # the form's fields, in order
RUN_COLUMNS = ["id", "state", "model", "dataset", "method", "step", "final_loss", "eval_loss", "duration_s",
               "created", "mine"]
RUN_WIDTHS = ["20%", "9%", "10%", "9%", "7%", "9%", "8%", "8%", "7%", "8%", "5%"]
PLOT_COLUMNS = {"step": "int64", "value": "float64", "series": "object"}
TAB_ID = "train"
# Gradio's Textbox autoscroll does not follow value updates (6.31): keep the log at its newest line unless
# the reader scrolled up; also run when the Train tab is opened (a hidden box cannot be scrolled).
FOLLOW_LOG_JS = """() => {
  const box = document.querySelector('#train-log textarea');
  if (!box) return;
  if (!box.dataset.follow) {
    box.dataset.follow = '1';
    box.addEventListener('scroll', () => {
      box.dataset.follow = box.scrollTop + box.clientHeight >= box.scrollHeight - 24 ? '1' : '0';
    });
  }
  // after the new text is rendered (and again once a hidden tab has been shown): scroll to the newest line
  const follow = () => { if (box.dataset.follow === '1') box.scrollTop = box.scrollHeight; };
  requestAnimationFrame(follow);
  setTimeout(follow, 150);
}"""


def _datasets_of(user: str) -> list[str]:
    return [d["name"] for d in list_datasets(user)]


def _progress_markdown(status: dict) -> str:
    if not status:
        return "No run selected."
    latest = status.get("latest") or {}
    # status.json is rewritten at most twice a second, metrics at every log: the loss shown may be a step ahead
    step, total = max(status.get("step") or 0, int(latest.get("step") or 0)), status.get("total_steps") or 0
    pct = f" ({100 * step / total:.0f}%)" if total else ""
    if status.get("method") == "prompt":  # a search counts metric calls, and may end an iteration past its budget
        parts = [f"**{status['id']}** · **{status.get('state')}** · {status.get('step') or 0} metric calls "
                 f"(budget {total or '?'})"]
    else:
        parts = [f"**{status['id']}** · **{status.get('state')}** · step {step}/{total or '?'}{pct}"]
    if status.get("phase") and status.get("state") == "running":
        parts.append(status["phase"])
    if status.get("elapsed"):
        parts.append(f"elapsed {status['elapsed']:.0f}s")
    if status.get("eta") and status.get("state") == "running":
        parts.append(f"ETA {status['eta']:.0f}s")
    if status.get("tokens_per_second"):
        parts.append(f"{status['tokens_per_second']:.0f} tokens/s")
    if "loss" in latest:
        parts.append(f"loss {latest['loss']:.4f}")
    if "eval_loss" in latest:
        parts.append(f"eval loss {latest['eval_loss']:.4f}")
    for key, where in (("rewards/accuracies", ""), ("eval_rewards/accuracies", " of held-out pairs")):
        if key in latest:  # preference tuning: how often the model prefers the chosen answer
            parts.append(f"prefers the chosen answer in {latest[key]:.0%}{where}")
    if (status.get("processes") or 1) > 1:
        parts.append(f"{status['processes']} processes (DDP)")
    text = " · ".join(parts)
    text += _job_line(status.get("job"))
    text += _evaluation_line(status.get("evaluation"))
    text += _prompt_line(status.get("prompt"))
    text += _votes_line(status.get("votes"))
    text += _preference_line(status.get("preference_eval"))
    if status.get("reason"):
        text += f"\n\n**Why:** {status['reason']}"
    for notice in status.get("notices") or []:
        text += f"\n\n> {notice}"
    if status.get("output") and status.get("state") == "completed":
        text += f"\n\nThe trained weights are in `{status['output']}`: chat with them in **Compare**, " \
                "publish or download them in **Publish**."

    for line in pushed_lines(status):  # where the model went
        text += f"\n\n{line}"
    return text


def _prompt_line(found: dict | None) -> str:
    """A prompt optimisation's best prompt (its owner's), its score, what the search cost, the best candidates."""
    found = found or {}
    top = found.get("top") or []
    if not found.get("best_prompt"):  # still searching: the best candidates scored so far
        return f"\n\nBest so far: validation score **{top[0]['score']:.3f}**." + _candidates_table(top) if top else ""
    reflection = found.get("reflection") or {}
    tokens = (reflection.get("input_tokens") or 0) + (reflection.get("output_tokens") or 0)
    dollars = f", ${reflection['dollars']:.4f}" if reflection.get("dollars") is not None else ""
    return (f"\n\n**Best prompt** (candidate {found['best_index']} of {found['candidates']}): validation score "
            f"**{found['best_score']:.3f}** against the starting prompt's {found['start_score']:.3f} on "
            f"{found['validation']}; {found['metric_calls']} metric calls, reflection {reflection.get('calls', 0)} "
            f"calls / {tokens} tokens{dollars}, {found.get('gpu_seconds') or 0:.0f} s answering. Use it: pick this "
            f"run under Compare's system prompt, or press *Its best prompt → system_prompt*.\n\n"
            f"```text\n{found['best_prompt']}\n```" + _candidates_table(top))


def _candidates_table(top: list[dict]) -> str:
    """The best candidates so far: score, parents, the prompt's start."""
    if not top:
        return ""
    rows = [f"| {c['index']} | {c['score']:.3f} | {', '.join(map(str, c['parents'])) or 'start'} | "
            f"{' '.join(c['prompt'].split())[:100].replace('|', '/')} |" for c in top]
    return "\n\n| candidate | validation score | from | prompt |\n|---|---|---|---|\n" + "\n".join(rows)


def _job_line(job: dict | None) -> str:
    """Where a run on Hugging Face Jobs trains (its owner's: the repo may be private)."""
    if not job:
        return ""
    guess = job.get("estimate") or {}
    estimated = f" (estimated ~{guess['minutes']:.0f} min, ~${guess['usd']:.2f})" if guess else ""
    return (f"\n\nOn Hugging Face Jobs: [job {job['id']}]({job['url']}) on {job['flavor']}{estimated}, "
            f"{job.get('stage', '?').lower()}; checkpoints and the result go to `{job['repo']}`.")


def _jobs_text(flavor: str, minutes: float, oauth=None) -> str:
    """The Jobs flavors with their prices, the picked one first, and what its time limit may cost at most."""
    token = auth.resolve_token(oauth)
    if not token:
        return ("**Hugging Face Jobs** run on your account: sign in with Hugging Face (or set HF_TOKEN) to see the "
                "flavors and their prices.")
    try:
        listed = hf_jobs.flavors(token)
    except GarageError as exc:
        return f"**Hugging Face Jobs:** {exc}"
    picked = next((f for f in listed if f["name"] == flavor), None)
    limit = (f"at most ${picked['usd_per_hour'] * float(minutes) / 60:.2f} for the {minutes:.0f}-minute limit"
             if picked and minutes else "the estimate of time and cost is made at Start (in the run log)")
    head = (f"**{flavor}**: ${picked['usd_per_hour']:.2f} an hour ({picked['what']}); billed by the second, {limit}."
            if picked else f"**{flavor}** is not a Jobs flavor: pick one below.")
    rows = "\n".join(f"| {f['name']} | ${f['usd_per_hour']:.2f} | {f['what']} |" for f in listed)
    return f"{head}\n\n| flavor | per hour | hardware |\n|---|---|---|\n{rows}"


def _evaluation_line(evaluation: dict | None) -> str:
    """GRPO's after-training evaluation, base against tuned (the run's evaluation.json has every row)."""
    if not evaluation or not evaluation.get("tuned"):
        return ""

    def side(name: str) -> str:
        values = evaluation.get(name) or {}
        return (f"{values.get('accuracy', 0):.0%} correct, {values.get('format_failure_rate', 0):.0%} format "
                "failures") if values else "—"

    return f"\n\n**Evaluation after training:** base {side('base')} → tuned {side('tuned')}."


def _preference_line(found: dict | None) -> str:
    """A preference run's held-out rows at its end (garage.train.preference.held_out_preference)."""
    if not found or found.get("margin") is None:
        return ""
    prefers = (f"prefers the chosen answer in {found['prefers_chosen']:.0%}, "
               if found.get("prefers_chosen") is not None else "")
    return (f"\n\n**Held-out rows after training ({found['rows']}):** the tuned model {prefers}mean reward margin "
            f"{found['margin']:.3f} (above 0: it moved towards the chosen answers).")


def build(tabs: gr.Tabs) -> dict:
    """Lay out the Train tab (``tabs``: the app's, opened on this one when a reload finds a run training);
    returns the components other tabs need (the run picker)."""
    specs = size_preset("tiny-gemma-3")
    with gr.Row():
        model = gr.Dropdown(choices=catalog.model_choices(), value="tiny-gemma-3", allow_custom_value=True,
                            label="model", info=TrainConfig.__dataclass_fields__["model"].metadata["help"], scale=3)
        dataset = gr.Dropdown(choices=[], label="dataset", allow_custom_value=True, scale=3,
                              info=TrainConfig.__dataclass_fields__["dataset"].metadata["help"])
        refresh_datasets = gr.Button("↻ datasets", scale=0, size="sm")
        gsm8k = gr.Button("GSM8K + GRPO preset", scale=0, size="sm")
    fit = gr.Markdown()
    # under 'Where it trains': Jobs' flavors and prices, once hf-jobs is picked
    # several GPUs only where there are (or CPU processes stand in for them); a flavor's GPUs need no field
    several = device.gpus_present() > 1 or device.cpu_processes_allowed()
    form = build_form(TrainConfig, skip=SKIP, defaults=specs, hidden=() if several else ("gpus",),
                      extras={"where": lambda: gr.Markdown(visible=False, elem_id="jobs-flavors")})
    where = form.pop("where")
    with gr.Row():
        start = gr.Button("Start training", variant="primary")
        stop = gr.Button("Stop", variant="stop")
        resume = gr.Button("Resume")
        delete = gr.Button("Delete run")
        use_prompt = gr.Button("Its best prompt → system_prompt", elem_id="use-prompt")
    start_error = gr.Markdown(elem_id="start-error")
    with gr.Row():
        run_pick = gr.Dropdown(choices=[], label="Run", allow_custom_value=True, scale=4)
        refresh_runs = gr.Button("↻ runs", scale=0, size="sm")
    progress = gr.Markdown("No run selected.")
    with gr.Row():
        # no height=: with one, Gradio 6.31 cuts the legend's entries off below the chart (which line is which)
        plot = gr.LinePlot(x="step", y="value", color="series", label="Loss", scale=2, elem_id="loss-plot")
        lr_plot = gr.LinePlot(x="step", y="value", color="series", label="Learning rate", scale=1,
                              elem_id="lr-plot")
    reward_plot = gr.LinePlot(x="step", y="value", color="series", visible=False, elem_id="reward-plot",
                              label="Rewards (GRPO) · validation score per metric call (prompt)")
    with gr.Row():
        log_tail = gr.Textbox(label="Log (tail)", lines=10, max_lines=10, autoscroll=True, elem_id="train-log")
        command = gr.Code(label="Reproduce from the command line", language="shell")
    runs_table = gr.Dataframe(label="Runs", headers=RUN_COLUMNS, interactive=False, wrap=True,
                              column_widths=RUN_WIDTHS)
    seen = gr.State({})  # what the page shows now (see on_tick): redraw only what changed
    settings_model = gr.State("tiny-gemma-3")  # the model whose settings the form holds (see on_model_change)
    timer = gr.Timer(1.0)

    @failure_stays("Start", 2, status=1)  # the reason stays under the buttons: a setting in a closed group
    def on_start(request: gr.Request, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None, model_name,
                 dataset_name, *values):
        # Gradio injects Request/OAuthProfile/OAuthToken only into positional parameters before *values. The token
        # is used only by a run on Hugging Face Jobs (the job runs on the signed-in person's account).
        user = user_of(request, profile)
        run_id = service.start_training({"model": model_name, "dataset": dataset_name,
                                         **dict(zip(FIELD_NAMES, values))}, user, request=request, token=oauth)
        gr.Info(f"Run {run_id} queued.")
        return gr.update(choices=_run_ids(), value=run_id), ""

    def on_where(run_on, flavor, minutes, oauth: gr.OAuthToken | None = None):
        if run_on != "hf-jobs":  # a run here: no prices to ask the Hub for
            return gr.update(visible=False)
        return gr.update(visible=True, value=_jobs_text(flavor, minutes, oauth))

    def on_model_change(model_name, settings_model, method):
        # a model the person picks brings its preset (for the form's method); the model of a reloaded or picked run
        # keeps that run's values
        preset = {} if model_name == settings_model else full_preset(model_name, method)
        return [_fit_text(model_name), model_name, *form_updates(TrainConfig, preset, skip=SKIP)]

    def on_method_pick(model_name, method, *values):
        # into GRPO or out of it, to a full fine-tune or back, the learning rate and lengths change by orders of
        # magnitude: a field still at what some method's preset gave it takes the picked method's; one the person
        # typed stays
        return form_updates(TrainConfig, preset_moves(model_name, method, dict(zip(FIELD_NAMES, values))), skip=SKIP)

    @user_errors
    def on_gsm8k(model_name, request: gr.Request, profile: gr.OAuthProfile | None = None):
        user = user_of(request, profile)
        values = gsm8k_preset(model_name or "tiny-gemma-3", user)
        gr.Info("GSM8K saved to your datasets; GRPO settings filled in (rewards: correct answer, format).")
        return [gr.update(choices=_datasets_of(user), value=values["dataset"]),
                *form_updates(TrainConfig, values, skip=SKIP)]

    @user_errors
    def on_stop(run_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        result = service.stop_training(_need(run_id), user_of(request, profile))
        gr.Info(f"Run {run_id}: {result['state']}.")

    @user_errors
    def on_resume(run_id, request: gr.Request, profile: gr.OAuthProfile | None = None,
                  oauth: gr.OAuthToken | None = None):
        service.resume_training(_need(run_id), user_of(request, profile), request=request, token=oauth)
        gr.Info(f"Run {run_id} queued to resume.")

    @user_errors
    def on_delete(run_id, request: gr.Request, profile: gr.OAuthProfile | None = None,
                  oauth: gr.OAuthToken | None = None):
        if run_id == CANCELLED:  # the person said no in the browser's confirmation
            return gr.update(), gr.update()
        user = user_of(request, profile)
        service.delete_run(_need(run_id), user, token=oauth)  # the token cancels a job nobody follows
        gr.Info(f"Run {run_id} deleted.")
        rows = service.list_runs(user)
        ids = [row["id"] for row in rows]
        return gr.update(choices=ids, value=ids[0] if ids else None), _frame(rows)

    def on_tick(run_id, last: dict, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if not run_id:
            return [gr.update()] * 8
        user = user_of(request, profile)
        try:
            status = service.training_status(run_id, user)
        except GarageError as exc:  # a deleted or mistyped run: say which (a bug goes to the log and the pop-up)
            return [f"⚠️ {exc}", None, None, gr.update(visible=False), "", "", gr.update(), {}]
        last = last if isinstance(last, dict) else {}
        state = status.get("state")
        # the runs table: on a change of run or state, and every 10 s while one trains
        table_key = f"{run_id}:{state}:{int(time.time() // 10) if state in ('queued', 'running') else ''}"
        now = {"table": table_key, "metrics": [run_id, service.metrics_version(run_id)]}
        if now["metrics"] == last.get("metrics") and last.get("drawn"):
            # nothing logged since the last tick (a finished run, slow steps) and every plot is drawn: send
            # none of them again (a long run's plots are thousands of points, polled every second by each viewer)
            now.update({name: last.get(name) for name in PLOT_NAMES}, drawn=True)
            loss, lr, rewards = gr.update(), gr.update(), gr.update()
        else:
            loss, lr, rewards = _plots(run_id, last, now)
            rewards = gr.update(value=rewards, visible=bool(now["rewards"]))
        table = _runs_frame(user) if table_key != last.get("table") else gr.update()
        run = _run(run_id)
        now["log"] = [run_id, run.log_size()]
        log = gr.update() if now["log"] == last.get("log") else \
            gr.update(value=run.log_tail(60) if status["yours"] else LOG_OWNERS_ONLY)
        return _progress_markdown(status), loss, lr, rewards, log, status["command"] or "", table, now

    @user_errors
    def on_load(request: gr.Request, profile: gr.OAuthProfile | None = None):
        user = user_of(request, profile)
        rows = service.list_runs(user)
        ids = [row["id"] for row in rows]
        picked = _own_run(rows) or (ids[0] if ids else None)
        config = _own_config(picked, user)  # the form shows what the user's run trains
        # a page (re)loaded while the user's run trains opens on this tab, where that run is
        opened = gr.Tabs(selected=TAB_ID) if _active_own_run(rows) else gr.skip()
        return (gr.update(choices=ids, value=picked), _frame(rows), _fit_text(config.model if config else None),
                *_settings_of(config, datasets=_datasets_of(user), user=user), opened)

    @user_errors
    def on_use_prompt(run_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        prompt = service.best_prompt(_need(run_id), user_of(request, profile))
        gr.Info("The best prompt is now the form's system_prompt (GRPO trains under it; a new prompt optimisation "
                "starts from it).")
        return prompt

    @user_errors
    def on_pick(run_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        return _settings_of(_own_config(run_id, user_of(request, profile)))

    def on_refresh_runs(request: gr.Request, profile: gr.OAuthProfile | None = None):
        rows = service.list_runs(user_of(request, profile))
        return gr.update(choices=[row["id"] for row in rows]), _frame(rows)

    def on_refresh_datasets(request: gr.Request, profile: gr.OAuthProfile | None = None):
        """↻ lists: the datasets, and the runs the run pickers offer (one finished since the page loaded)."""
        user = user_of(request, profile)
        runs = _run_choices(user)
        return [gr.update(choices=_datasets_of(user)), *(gr.update(choices=runs[name]) for name in RUN_PICKERS)]

    form_components = [form[n] for n in FIELD_NAMES]
    settings = [dataset, model, settings_model, *form_components]  # what _settings_of fills
    model.change(on_model_change, [model, settings_model, form["method"]], [fit, settings_model, *form_components],
                 api_visibility="private")
    form["method"].input(on_method_pick, [model, form["method"], *form_components], form_components,
                         api_visibility="private")
    gsm8k.click(on_gsm8k, model, [dataset, *form_components], api_visibility="private")
    for name in ("run_on", "flavor", "job_timeout_minutes"):
        # one at a time, in order: an answer for the flavor typed before must not land after the newest one's
        form[name].change(on_where, [form["run_on"], form["flavor"], form["job_timeout_minutes"]], where,
                          api_visibility="private", concurrency_limit=1, concurrency_id="jobs-flavors",
                          show_progress="hidden")
    start.click(on_start, [model, dataset, *form_components], [run_pick, start_error], api_visibility="private")
    stop.click(on_stop, run_pick, None, api_visibility="private")
    resume.click(on_resume, run_pick, None, api_visibility="private")
    delete.click(on_delete, run_pick, [run_pick, runs_table], api_visibility="private", js=CONFIRM_DELETE_JS)
    use_prompt.click(on_use_prompt, run_pick, form["system_prompt"], api_visibility="private")
    live = [progress, plot, lr_plot, reward_plot, log_tail, command, runs_table, seen]
    timer.tick(on_tick, [run_pick, seen], live, api_visibility="private", show_progress="hidden")
    run_pick.change(on_tick, [run_pick, seen], live, api_visibility="private")
    run_pick.input(on_pick, run_pick, settings, api_visibility="private")  # a person's pick, not Start or Delete
    log_tail.change(None, None, None, js=FOLLOW_LOG_JS)
    refresh_runs.click(on_refresh_runs, None, [run_pick, runs_table], api_visibility="private")
    refresh_datasets.click(on_refresh_datasets, None, [dataset, *(form[name] for name in RUN_PICKERS)],
                           api_visibility="private")
    return {"run_pick": run_pick, "on_load": (on_load, [run_pick, runs_table, fit, *settings, tabs]),
            "dataset": dataset}


LOG_OWNERS_ONLY = "The log is shown to the run's owner only (it names their files and the repos they pushed to)."
CANCELLED = "__cancelled__"
# Ask before deleting: a run's folder (weights, checkpoints, log) cannot be brought back.
CONFIRM_DELETE_JS = (f"(id) => (!id || confirm('Delete run ' + id + ' with its weights, checkpoints and log? "
                     f"This cannot be undone.')) ? id : '{CANCELLED}'")


def _need(run_id: str | None) -> str:
    if not run_id:
        raise GarageError("Pick a run first.")
    return run_id


def _run_ids() -> list[str]:
    return [r["id"] for r in service.list_runs()]


def _runs_frame(user: str):
    return _frame(service.list_runs(user))


def _frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _own_run(rows: list[dict]) -> str | None:
    """The run a reload shows the user: their queued or running one, else their newest (``rows``: list_runs(user),
    newest first)."""
    return _active_own_run(rows) or next((row["id"] for row in rows if row["mine"]), None)


def _active_own_run(rows: list[dict]) -> str | None:
    return next((row["id"] for row in rows if row["mine"] and row["state"] in ("queued", "running")), None)


def _own_config(run_id: str | None, user: str) -> TrainConfig | None:
    """The saved TrainConfig of the user's own run; None for no run, another user's run (their dataset, prompts
    and rubric stay theirs) or an unreadable config."""
    if not run_id:
        return None
    try:
        run = _run(run_id)
        return run.config() if access.owns(run.status(), user) else None
    except GarageError:
        return None


def _settings_of(config: TrainConfig | None, datasets: list[str] | None = None, user: str | None = None) -> list:
    """Updates for [dataset, model, the model the values are for, *form]: ``config``'s values, or none without one.

    ``datasets`` (a reload) also refreshes the dataset list, and ``user`` the run pickers; without a run the newest
    dataset is preselected.
    """
    listed = {} if datasets is None else {"choices": datasets}
    if config is None:
        newest = {"value": datasets[0]} if datasets else {}
        updates = [gr.update(**listed, **newest), gr.update(), gr.update(), *form_updates(TrainConfig, {}, skip=SKIP)]
    else:
        updates = [gr.update(**listed, value=config.dataset), gr.update(value=config.model), config.model,
                   *form_updates(TrainConfig, config.to_dict(), skip=SKIP)]
    if user is not None:
        for name, choices in _run_choices(user).items():
            updates[3 + FIELD_NAMES.index(name)].update(choices=choices)
    return updates


def _run_choices(user: str) -> dict[str, list]:
    """The run pickers' choices: runs with a LoRA adapter to continue (init_run), and runs with weights whose
    prompt to optimise (tuned_run), each labelled by what it trained."""
    found = {"init_run": [NO_RUN], "tuned_run": [NO_RUN]}
    for run, status in service.runs_with_weights(user, "use"):
        label = f"{run.id} · {status.get('method')} · {status.get('dataset') or ''}"
        found["tuned_run"].append((label, run.id))
        if status.get("method") != "full":
            found["init_run"].append((label, run.id))
    return found


PLOT_NAMES = ("loss", "learning_rate", "rewards")


def _plots(run_id: str, last: dict, now: dict) -> list:
    """The three plots' frames from one read of the run's metrics; records each plot's series in ``now``."""
    import pandas as pd

    records = service.run_metrics(run_id)
    plots = []
    for name in PLOT_NAMES:
        # typed even when empty: a plot first drawn from an untyped (object) frame keeps categorical axes
        frame = pd.DataFrame(service.plot_rows(records, name),
                             columns=list(PLOT_COLUMNS)).astype(PLOT_COLUMNS)
        now[name] = sorted(set(frame["series"]))
        # Gradio's plot keeps the value types and colours of its first drawing: an empty plot, or one whose
        # series changed (eval loss appears, another run), is cleared for one tick and drawn afresh.
        plots.append(frame if not frame.empty and now[name] == last.get(name) else None)
    now["drawn"] = all(plot is not None or not now[name] for plot, name in zip(plots, PLOT_NAMES))
    return plots


def _votes_line(tally: dict | None) -> str:
    """The owner's votes in Compare on this run, as its win rate against the base."""
    if not tally:
        return ""
    decided = tally["wins"] + tally["losses"]
    rate = f" ({tally['win_rate']:.0%})" if decided else ""
    return (f"\n\n**Your votes in Compare:** the fine-tuned model won {tally['wins']} of {decided} decided{rate}; "
            f"{tally['ties']} tie(s), both bad {tally['both_bad']} time(s).")


def _run(run_id: str):
    return get_worker().store.get(run_id)


def _fit_text(model_name: str | None) -> str:
    info = catalog.resolve(model_name or "tiny-gemma-3")
    estimates = ", ".join(f"{m}: ~{info.memory_gb(m)} GiB" for m in ("lora", "qlora", "full"))
    text = f"{info.label}. Estimated GPU memory: {estimates}."
    if "torch" in sys.modules:  # only once the worker has imported it: the page never waits for torch
        text += " " + catalog.gpu_fit(info.name, "lora")
    return text
