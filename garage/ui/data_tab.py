"""Data tab: upload a file or name a Hub dataset, see what training will see, save it."""

from __future__ import annotations

import json

import gradio as gr

from garage import access, catalog, paths
from garage.config import TrainConfig
from garage.data.loaders import looks_like_hub_id
from garage.data.preview import import_dataset, preview
from garage.data.stats import eval_size
from garage.data.store import list_datasets
from garage.errors import GarageError
from garage.models.loading import load_tokenizer
from garage.train.presets import preset_for
from garage.ui import augment_panel
from garage.ui.session import failure_stays, said, user_errors, user_of

ACCEPTED = [".json", ".jsonl", ".csv", ".parquet"]
TABLE_COLUMNS = ["system", "user", "assistant", "turns"]
COLUMN_TROUBLE = ("Could not tell which columns", "is not in the data")  # what Map columns can mend
MAP_COLUMNS_HINT = " Name the columns under **Map columns** (now open) and press Preview again."


def _source(upload, hub_id: str):
    if upload:
        return upload if isinstance(upload, str) else getattr(upload, "name", upload)
    if hub_id and hub_id.strip():
        text = hub_id.strip()
        access.refuse_dataset_path(text, hub_id=looks_like_hub_id(text))  # not other people's files
        return text
    raise GarageError("Upload a file (JSON, JSONL, CSV or Parquet) or type a Hub dataset id such as owner/name.")


def _mapping(user_col: str, assistant_col: str, system_col: str) -> dict | None:
    mapping = {role: col.strip() for role, col in (("user", user_col), ("assistant", assistant_col),
                                                    ("system", system_col)) if col and col.strip()}
    return mapping or None


def _messages_of(row: dict) -> list[dict]:
    """A row's turns as the preview shows them: a preference row's prompt, then its two answers in one reply."""
    if "prompt" not in row:
        return row.get("messages", [])
    if "chosen" in row:
        answer = f"**Chosen:** {_joined(row['chosen'])}\n\n**Rejected:** {_joined(row['rejected'])}"
    else:
        answer = f"**{'Good' if row['label'] else 'Bad'} answer:** {_joined(row['completion'])}"
    return [*row["prompt"], {"role": "assistant", "content": answer}]


def _joined(turns: list[dict]) -> str:
    return "\n\n".join(t["content"] for t in turns)


def _chat_of(conversation: dict) -> list[dict]:
    """One conversation as gr.Chatbot messages (system prompt shown as a note)."""
    out = []
    for message in _messages_of(conversation):
        role = message.get("role")
        if role == "system":
            out.append({"role": "assistant", "content": f"*(system)* {message['content']}"})
        else:
            out.append({"role": role, "content": message.get("content", "")})
    return out


CELL_CHARS = 500


def _table_of(rows: list[dict]):
    import pandas as pd

    table = []
    for row in rows:
        messages = _messages_of(row)
        table.append({
            "system": _cell(next((m["content"] for m in messages if m["role"] == "system"), "")),
            "user": _cell(next((m["content"] for m in messages if m["role"] == "user"), "")),
            "assistant": _cell(next((m["content"] for m in messages if m["role"] == "assistant"), "")),
            "turns": sum(1 for m in messages if m["role"] != "system"),
        })
    return pd.DataFrame(table, columns=TABLE_COLUMNS)


def _cell(text: str, limit: int = CELL_CHARS) -> str:
    """A table cell's text, cut: one 30k-character answer made its row thousands of pixels tall (the chat view
    below the table shows the first row whole)."""
    return text if len(text) <= limit else f"{text[:limit]}… (+{len(text) - limit:,} characters)"


def _preset(model: str, field: str):
    """What the Train tab uses for ``field`` with ``model`` unless the user sets it: the model's preset, else
    TrainConfig's default."""
    return preset_for(model, None).get(field, TrainConfig.__dataclass_fields__[field].default)


ROWS_ARE = {"preference": "preference pairs", "kto": "labelled answers (KTO)"}  # what a dataset's rows are, by kind


def _summary_markdown(report: dict, eval_fraction: float) -> str:
    stats = report["stats"]
    tokens = stats.get("tokens", {})
    lines = [f"**{report['rows']} {ROWS_ARE.get(report['kind'], 'conversations')}** from `{report.get('source', '')}` · format **{report['format']}**"
             f" ({report.get('format_description', '')}) · columns used: `{json.dumps(report['mapping'])}`"]
    if tokens:
        lines.append(f"Tokens per row ({tokens.get('method')}): p50 {tokens.get('p50')}, p95 {tokens.get('p95')}, "
                     f"max {tokens.get('max')} · truncated at max length: {stats.get('truncated', 0)} · "
                     f"duplicates: {stats.get('duplicates', 0)}")
    if report["dropped"]:
        lines.append("Dropped: " + ", ".join(f"{n} {why}" for why, n in report["dropped"].items()))
    held = eval_size(report["rows"], eval_fraction) if report["rows"] >= 4 else 0
    lines.append(f"Train / eval split at eval_fraction {eval_fraction} (the Train tab's default for this model): "
                 f"{report['rows'] - held} train / {held} eval rows (deterministic by seed).")
    for warning in report["warnings"]:
        lines.append(f"⚠️ {warning}")
    return "\n\n".join(lines)


def preview_dataset(upload, hub_id: str = "", hub_config: str = "", hub_split: str = "train", user_col: str = "",
                    assistant_col: str = "", system_col: str = "", model: str = "tiny-gemma-3",
                    max_seq_length: float | None = None):
    """File or Hub id in: detected format, row count, statistics and first rows out."""
    tokenizer = load_tokenizer(model) if model else None
    report = preview(_source(upload, hub_id), hub_config=hub_config or None, hub_split=hub_split or "train",
                     mapping=_mapping(user_col, assistant_col, system_col), tokenizer=tokenizer,
                     max_seq_length=int(max_seq_length or _preset(model, "max_seq_length")), n_rows=20)
    first = report["first_rows"]
    summary = _summary_markdown(report, _preset(model, "eval_fraction"))
    return report, summary, _table_of(first), _chat_of(first[0]) if first else []


def _columns_would_help(why: str) -> bool:
    return any(words in why for words in COLUMN_TROUBLE)


def _why_no_preview(exc: BaseException, *pasted: str | None) -> str:
    why = said(exc, *pasted)
    return why + (MAP_COLUMNS_HINT if _columns_would_help(why) else "")


@failure_stays("Preview", 5, status=1, headline="No preview.", explain=_why_no_preview,
               others=lambda why: [None, _table_of([]), [], gr.Accordion(open=True) if _columns_would_help(why)
                                   else gr.skip()])
def preview_on_page(*inputs):
    """The page's Preview (the API's /preview_dataset raises instead): a failure empties the last source's summary
    and rows, so nothing stale stays on screen, says why in the summary line, and opens Map columns when naming
    them helps; a success leaves Map columns as it is."""
    return (*preview_dataset(*inputs), gr.skip())


def save_dataset(upload, hub_id: str, hub_config: str, hub_split: str, user_col: str, assistant_col: str,
                 system_col: str, name: str, overwrite: bool, request: gr.Request,
                 profile: gr.OAuthProfile | None = None):
    """Normalise the source and save it as ``name`` in the caller's workspace."""
    user = user_of(request, profile)
    name = paths.check_name(name, "dataset")  # said before the source is read and normalised
    meta = import_dataset(user, name, _source(upload, hub_id), hub_config=hub_config or None,
                          hub_split=hub_split or "train", mapping=_mapping(user_col, assistant_col, system_col),
                          overwrite=bool(overwrite))
    names = [d["name"] for d in list_datasets(user)]
    methods = {"preference": " (train it with method dpo, orpo or kto)", "kto": " (train it with method kto)"}
    message = (f"Saved **{meta['name']}**: {meta['rows']} {ROWS_ARE.get(meta['kind'], 'conversations')}. The "
               f"Train tab lists it now{methods.get(meta['kind'], '')}.")
    return message, gr.update(choices=names, value=meta["name"])


def build(train_dataset: gr.Dropdown) -> dict:
    """The tab; returns {"on_load": (handler, outputs)} for the app's ``demo.load``."""
    gr.Markdown("Bring conversations: upload a file or name a Hugging Face dataset. Accepted shapes: OpenAI "
                "`messages`, ShareGPT `conversations`, question/answer, Alpaca instruction/input/output, "
                "prompt/completion, prompt/response, plain `text`; for preference tuning (dpo, orpo, kto) "
                "prompt/chosen/rejected, chosen/rejected conversations (Anthropic HH too) or prompt/completion/label. "
                "Documents (PDF, DOCX, ...) go to **Documents → Q/A** below.")
    with gr.Row():
        upload = gr.File(label="Data file", file_types=ACCEPTED, type="filepath", elem_id="data-file")
        with gr.Column():
            hub_id = gr.Textbox(label="…or a Hub dataset id", placeholder="owner/name")
            with gr.Row():
                hub_config = gr.Textbox(label="config", placeholder="(default)")
                hub_split = gr.Textbox(label="split", value="train")
    with gr.Accordion("Map columns (when detection is unsure or wrong)", open=False) as map_columns:
        with gr.Row():
            user_col = gr.Textbox(label="user / question column")
            assistant_col = gr.Textbox(label="assistant / answer column")
            system_col = gr.Textbox(label="system prompt column (optional)")
    with gr.Row():
        model = gr.Dropdown(choices=catalog.model_choices(), value="tiny-gemma-3", allow_custom_value=True,
                            label="Count tokens with this model's tokenizer and template")
        max_len = gr.Number(value=_preset("tiny-gemma-3", "max_seq_length"), label="max_seq_length", precision=0,
                            info="The chosen model's default in the Train tab: rows longer are counted as cut.")
        preview_btn = gr.Button("Preview", variant="primary")
    summary = gr.Markdown(elem_id="data-summary")
    with gr.Row():
        table = gr.Dataframe(label="First rows (as training will see them)", headers=TABLE_COLUMNS, wrap=True,
                             interactive=False, column_widths=["14%", "38%", "38%", "10%"])
        chat = gr.Chatbot(label="First conversation, rendered", height=320)
    report = gr.JSON(label="Full report", visible=False)
    with gr.Row():
        name = gr.Textbox(label="Save as", placeholder="my-dataset")
        overwrite = gr.Checkbox(label="overwrite", value=False)
        save_btn = gr.Button("Save to my workspace", variant="primary")
    saved = gr.Markdown()
    with gr.Accordion("Documents → Q/A (generate training conversations from your documents)", open=False):
        augment_load = augment_panel.build(train_dataset)

    model.change(lambda name: _preset(name, "max_seq_length"), model, max_len, api_visibility="private")
    sources = [upload, hub_id, hub_config, hub_split, user_col, assistant_col, system_col]
    preview_btn.click(preview_on_page, [*sources, model, max_len], [report, summary, table, chat, map_columns],
                      api_name="preview_on_page", api_visibility="private", concurrency_limit=8,
                      concurrency_id="preview")
    api_only = gr.Button(visible=False)  # /preview_dataset: the same inputs (uploads included), errors raised
    api_only.click(user_errors(preview_dataset), [*sources, model, max_len], [report, summary, table, chat],
                   api_name="preview_dataset", concurrency_limit=8, concurrency_id="preview")
    # a new file's columns are its own: a mapping made for the last one would only get in the way
    upload.change(lambda: ("", "", ""), None, [user_col, assistant_col, system_col], api_visibility="private")
    saving = save_btn.click(user_errors(save_dataset), [*sources, name, overwrite], [saved, train_dataset],
                            api_name="save_dataset")
    # a failed save says so where the last "Saved" line was, and leaves no error mark on the Train tab's dataset
    # picker (the mark covered it and took its clicks)
    saving.failure(lambda: ("Not saved: the pop-up says why.", gr.update()), None, [saved, train_dataset],
                   api_visibility="private", show_progress="hidden")
    upload.change(lambda: "", None, saved, api_visibility="private")  # a new file: the last one's save line goes
    return {"on_load": augment_load}
