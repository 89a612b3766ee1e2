"""garage.data: loading, format detection, normalisation, validation, stats, split and store (offline)."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from garage import data
from garage.data import loaders
from garage.errors import GarageError

GSM8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "train.jsonl"


# --- helpers -------------------------------------------------------------------------
def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def roles(conv: dict) -> list[str]:
    return [m["role"] for m in conv["messages"]]


def user_id() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


@pytest.fixture(scope="module")
def tokenizer():
    """A word-level tokenizer: one token per whitespace-separated word, so lengths are exact."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2, "<pad>": 3, "user": 4, "assistant": 5, "system": 6}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                  unk_token="<unk>", pad_token="<pad>")
    # <bos>, then per message: its role word and its words
    tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    return tok


# --- formats -----------------------------------------------------------------------------
FORMAT_CASES = [
    ("messages", [{"messages": [msg("system", "Be brief."), msg("user", "Hi?"), msg("assistant", "Hello.")]}],
     ["system", "user", "assistant"], "Hi?", "Hello."),
    ("sharegpt", [{"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q1"},
                                     {"from": "gpt", "value": "A1"}, {"from": "human", "value": "Q2"},
                                     {"from": "gpt", "value": "A2"}]}],
     ["system", "user", "assistant", "user", "assistant"], "Q1", "A2"),
    ("sharegpt", [{"conversations": [{"from": "user", "value": "Q"}, {"from": "assistant", "value": "A"}]}],
     ["user", "assistant"], "Q", "A"),
    ("qa", [{"Question": "2+2?", "Answer": "4"}], ["user", "assistant"], "2+2?", "4"),
    ("qa", [{"query": "Capital of France?", "response": "Paris"}], ["user", "assistant"], "Capital of France?",
     "Paris"),
    ("alpaca", [{"instruction": "Translate", "input": "chat", "output": "cat"}], ["user", "assistant"],
     "Translate\n\nchat", "cat"),
    ("alpaca", [{"instruction": "Say hi", "input": "", "output": "hi"}], ["user", "assistant"], "Say hi", "hi"),
    ("alpaca", [{"Instruction": "Name a colour", "Response": "blue"}], ["user", "assistant"], "Name a colour",
     "blue"),
    ("prompt_completion", [{"prompt": "The sky is", "completion": "blue"}], ["user", "assistant"], "The sky is",
     "blue"),
    ("prompt_response", [{"prompt": "P", "response": "R"}], ["user", "assistant"], "P", "R"),
    # TRL's conversational prompt / completion: lists of turns, not text
    ("prompt_completion", [{"prompt": [msg("system", "S"), msg("user", "Q1"), msg("assistant", "A1"),
                                       msg("user", "Q2")], "completion": [msg("assistant", "A2")]}],
     ["system", "user", "assistant", "user", "assistant"], "Q1", "A2"),
    ("prompt_completion", [{"prompt": [msg("user", "The sky is")], "completion": "blue"}], ["user", "assistant"],
     "The sky is", "blue"),
    # an answer that is JSON of other things (not turns) stays text
    ("alpaca", [{"instruction": "Extract the senders", "input": "From ann", "output": '[{"from": "ann@x.com"}]'}],
     ["user", "assistant"], "Extract the senders\n\nFrom ann", '[{"from": "ann@x.com"}]'),
    ("qa", [{"question": "Roles?", "answer": '[{"role": "admin", "content": "all"}]'}], ["user", "assistant"],
     "Roles?", '[{"role": "admin", "content": "all"}]'),
    ("input_output", [{"input": "in", "output": "out"}], ["user", "assistant"], "in", "out"),
]


@pytest.mark.parametrize("fmt,rows,expected_roles,first_user,last_answer", FORMAT_CASES)
def test_formats_detected_and_normalised(tmp_path, fmt, rows, expected_roles, first_user, last_answer):
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    guess = data.detect_format(data.load_file(path))
    assert guess.format == fmt and not guess.ambiguous and guess.confidence == 1.0
    result = data.preview(str(path))
    assert result["format"] == fmt and result["rows"] == 1 and result["dropped"] == {}
    conv = result["first_rows"][0]
    assert roles(conv) == expected_roles
    assert [m for m in conv["messages"] if m["role"] == "user"][0]["content"] == first_user
    assert conv["messages"][-1]["content"] == last_answer


def test_system_column_kept(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"system_prompt": "You are terse.", "question": "Q", "answer": "A"},
                                              {"system_prompt": "", "question": "Q2", "answer": "A2"}])
    result = data.preview(path)
    assert result["mapping"] == {"user": "question", "assistant": "answer", "system": "system_prompt"}
    assert result["first_rows"][0]["messages"][0] == msg("system", "You are terse.")
    assert roles(result["first_rows"][1]) == ["user", "assistant"]
    assert result["stats"]["system_prompts"] == 1


def test_plain_text_kept_as_text_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "Once upon a time."}, {"text": "  "}, {"text": "The end."}])
    result = data.preview(path)
    assert result["format"] == "text" and result["kind"] == "text"
    assert result["first_rows"] == [{"text": "Once upon a time."}, {"text": "The end."}]
    assert result["dropped"] == {"empty_text": 1}
    assert any("continued pre-training" in w for w in result["warnings"])


def test_ambiguous_columns_reported_and_mapping_overrides(tmp_path):
    rows = [{"question": "q", "answer": "a", "prompt": "p", "completion": "c"}]
    guess = data.detect_format(rows)
    assert guess.ambiguous and guess.confidence < 1
    assert {"format": "prompt_completion", "mapping": {"user": "prompt", "assistant": "completion"}} \
        in guess.alternatives
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    result = data.preview(path, mapping={"user": "prompt", "assistant": "completion"})
    assert result["format"] == "custom" and not result["ambiguous"]
    assert result["first_rows"][0]["messages"] == [msg("user", "p"), msg("assistant", "c")]


def test_explicit_mapping_for_unknown_columns(tmp_path):
    path = write_csv(tmp_path / "odd.csv", ["col_a", "col_b", "col_c"], [["hello", "world", "be kind"]])
    with pytest.raises(GarageError) as err:
        data.preview(path)
    text = str(err.value)
    assert "col_a, col_b, col_c" in text and "question/answer" in text and "Map the columns" in text
    result = data.preview(path, mapping={"user": "COL_A", "assistant": "col_b", "system": "col_c", "input": ""})
    assert result["first_rows"][0]["messages"] == [msg("system", "be kind"), msg("user", "hello"),
                                                   msg("assistant", "world")]
    with pytest.raises(GarageError, match="'nope' .*not in the data.*col_a"):
        data.preview(path, mapping={"user": "nope", "assistant": "col_b"})
    with pytest.raises(GarageError, match="Map both"):
        data.preview(path, mapping={"user": "col_a"})


# --- file types ------------------------------------------------------------------------
def test_json_array_and_wrapped_lists(tmp_path):
    rows = [{"question": "Q1", "answer": "A1"}, {"question": "Q2", "answer": "A2"}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text(json.dumps({"data": rows}))
    sdk = {"summary": "A document about things.", "qa_pairs": rows}
    (tmp_path / "sdk_qa_pairs.json").write_text(json.dumps(sdk))
    for name in ("a.json", "b.json", "sdk_qa_pairs.json"):
        result = data.preview(tmp_path / name)
        assert result["format"] == "qa" and result["rows"] == 2, name
        assert result["first_rows"][1]["messages"][1] == msg("assistant", "A2")
    (tmp_path / "c.json").write_text(json.dumps({"summary": "x", "qa_pairs": []}))
    with pytest.raises(GarageError, match="no rows.*qa_pairs"):
        data.load_file(tmp_path / "c.json")


def test_type_detected_from_content(tmp_path):
    rows = [{"prompt": "p", "completion": "c"}, {"prompt": "p2", "completion": "c2"}]
    write_jsonl(tmp_path / "lines.json", rows)              # JSONL content in a .json file
    (tmp_path / "array.jsonl").write_text(json.dumps(rows))  # a JSON array in a .jsonl file
    (tmp_path / "noext").write_text(json.dumps(rows))        # no extension: read by content
    for name in ("lines.json", "array.jsonl", "noext"):
        assert data.load_file(tmp_path / name) == rows, name


def test_csv_tsv_bom_and_quoted_newlines(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["Question", "Answer"], [["Line one\nline two, with comma", "Yes"],
                                                                  ["Q2", "A2"]])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # UTF-8 with BOM is fine
    result = data.preview(path)
    assert result["mapping"] == {"user": "Question", "assistant": "Answer"}
    assert result["first_rows"][0]["messages"][0]["content"] == "Line one\nline two, with comma"
    tsv = write_csv(tmp_path / "d.tsv", ["instruction", "output"], [["Do it", "Done"]], delimiter="\t")
    assert data.preview(tsv)["first_rows"][0]["messages"] == [msg("user", "Do it"), msg("assistant", "Done")]
    semi = tmp_path / "semi.csv"
    semi.write_text("question;answer\nQ;A\n", encoding="utf-8")
    assert data.load_file(semi) == [{"question": "Q", "answer": "A"}]


def test_csv_messages_column_as_json_string(tmp_path):
    conv = [msg("user", "Hi"), msg("assistant", "Hello")]
    path = write_csv(tmp_path / "m.csv", ["id", "messages"], [["1", json.dumps(conv)]])
    result = data.preview(path)
    assert result["format"] == "messages" and result["first_rows"][0]["messages"] == conv


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "messages": [[msg("user", "Q"), msg("assistant", "A")], [msg("user", "Q2"), msg("assistant", "A2")]],
        "source": ["x", "y"],
    })
    pq.write_table(table, tmp_path / "d.parquet")
    result = data.preview(tmp_path / "d.parquet")
    assert result["format"] == "messages" and result["rows"] == 2
    assert result["first_rows"][1]["messages"][1] == msg("assistant", "A2")
    assert any("source" in w for w in result["warnings"])  # unused column is mentioned
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(GarageError, match="not a readable Parquet"):
        data.load_file(tmp_path / "broken.parquet")


def test_stream_upload(tmp_path):
    stream = io.BytesIO(b'{"question": "Q", "answer": "A"}\n')
    stream.name = "upload.jsonl"
    assert data.preview(stream)["first_rows"][0]["messages"][1] == msg("assistant", "A")


def test_real_gsm8k_file():
    assert GSM8K.is_file(), GSM8K
    result = data.preview(str(GSM8K), n_rows=3)
    assert result["format"] == "qa" and result["mapping"] == {"user": "question", "assistant": "answer"}
    assert result["rows"] == result["total"] > 7000 and result["dropped"] == {}
    first = result["first_rows"][0]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant"]
    assert first[0]["content"].startswith("Natalia sold clips") and first[1]["content"].endswith("#### 72")
    assert len(result["first_rows"]) == 3


# --- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,content", [("e.jsonl", ""), ("e.json", "  \n"), ("e.csv", "\n\n"),
                                          ("h.csv", "question,answer\n"), ("a.json", "[]")])
def test_empty_files(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(GarageError, match="empty|no rows"):
        data.preview(tmp_path / name)


def test_invalid_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "Q", "answer": "A"}\n\n{"question": "Q2", "answer": "A2"\n')
    with pytest.raises(GarageError) as err:
        data.load_file(path)
    assert "line 3" in str(err.value) and "bad.jsonl" in str(err.value)
    path.write_text('{"question": "Q", "answer": "A"}\n[1, 2]\n')
    with pytest.raises(GarageError, match="line 2 is a JSON list"):
        data.load_file(path)


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"question": "Q" "answer": "A"}\n]')
    with pytest.raises(GarageError) as err:
        data.load_file(path)
    assert "line 2, column 20" in str(err.value)
    path.write_text('"just a string"')
    with pytest.raises(GarageError, match="not a list of rows"):
        data.load_file(path)


def test_non_utf8_names_the_byte(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("question,answer\nCaf\u00e9?,Oui\n".encode("latin-1"))
    with pytest.raises(GarageError) as err:
        data.load_file(path)
    text = str(err.value)
    assert "byte 19" in text and "line 2" in text and "UTF-8" in text
    path.write_bytes("question,answer\n".encode("utf-16"))
    with pytest.raises(GarageError, match="UTF-16"):
        data.load_file(path)
    path.write_bytes(b"\x00\xff\x13 random bytes \x00")  # a binary file is not blamed on an encoding
    with pytest.raises(GarageError, match="latin.csv is not a text file"):
        data.load_file(path)


def test_size_limit_checked_before_reading(tmp_path, monkeypatch):
    big = tmp_path / "big.jsonl"
    with big.open("wb") as handle:
        handle.truncate(201 * 1024 * 1024)  # sparse: takes no disk space

    def no_read(*args, **kwargs):
        raise AssertionError("the file was read")

    monkeypatch.setattr(loaders, "read_capped", no_read)
    with pytest.raises(GarageError) as err:
        data.load_file(big)
    assert "201.0 MB" in str(err.value) and "200 MB" in str(err.value) and "GARAGE_MAX_UPLOAD_MB" in str(err.value)
    monkeypatch.undo()

    monkeypatch.setenv("GARAGE_MAX_UPLOAD_MB", "0.001")  # about 1 KB
    small = write_jsonl(tmp_path / "s.jsonl", [{"question": "q" * 50, "answer": "a" * 50}] * 20)
    with pytest.raises(GarageError, match=r"s.jsonl is \d+\.\d KB, above the upload limit of 0.001 MB"):
        data.load_file(small)
    stream = io.BytesIO(small.read_bytes())
    stream.name = "s.jsonl"
    with pytest.raises(GarageError, match="above the upload limit"):
        data.preview(stream)
    assert stream.tell() <= loaders.max_upload_bytes() + 1  # read with a cap, not whole


def test_ragged_csv_row(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("question,answer\nQ1,A1\nQ2,A2,extra\nQ3,A3\n")
    with pytest.raises(GarageError) as err:
        data.load_file(path)
    text = str(err.value)
    assert "line 3" in text and "3 field(s)" in text and "header has 2" in text


def test_unsupported_extension(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("question,answer\n")
    with pytest.raises(GarageError) as err:
        data.load_file(path)
    assert ".txt" in str(err.value) and ".jsonl" in str(err.value) and ".parquet" in str(err.value)


def test_missing_file_and_bad_source(tmp_path):
    with pytest.raises(GarageError, match="File not found"):
        data.preview(str(tmp_path / "gone.jsonl"))
    with pytest.raises(GarageError, match="neither a file nor"):
        data.preview("not a valid id!")


def test_hub_offline_and_not_found(monkeypatch):
    assert loaders.looks_like_hub_id("openai/gsm8k") and loaders.looks_like_hub_id("gsm8k")
    assert not loaders.looks_like_hub_id("train.jsonl")
    with pytest.raises(GarageError) as err:
        data.preview("someone-zz/does-not-exist-zz")
    text = str(err.value)
    assert "unreachable" in text and "offline" in text and "Uploading a file" in text

    import datasets

    class DatasetNotFoundError(Exception):
        pass

    def missing(*args, **kwargs):
        raise DatasetNotFoundError("Dataset 'x/y' doesn't exist on the Hub or cannot be accessed.")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(GarageError, match="does not exist"):
        data.preview("x/y")

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'x/y' on the Hub (ConnectTimeout)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(GarageError, match="Could not reach the Hugging Face Hub"):
        data.preview("x/y")


def test_hub_rows_loaded(monkeypatch):
    import datasets

    seen = {}

    def fake(name, config, split):
        seen.update(name=name, config=config, split=split)
        return datasets.Dataset.from_list([{"question": "Q", "answer": "A"}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    result = data.preview("openai/gsm8k", hub_config="main", hub_split="test")
    assert seen == {"name": "openai/gsm8k", "config": "main", "split": "test"}
    assert result["format"] == "qa" and result["source"] == "hf://openai/gsm8k (main) [test]"


def test_empty_answers_dropped_and_counted(tmp_path):
    rows = [{"question": "Q1", "answer": "A1"}, {"question": "Q2", "answer": ""}, {"question": "Q3", "answer": None},
            {"question": "", "answer": "A4"}]
    result = data.preview(write_jsonl(tmp_path / "d.jsonl", rows))
    assert result["rows"] == 1 and result["total"] == 4
    assert result["dropped"] == {"empty_answer": 2, "empty_prompt": 1}
    assert result["stats"]["empty_answers_dropped"] == 2
    assert any("Dropped 2 of 4 rows" in w for w in result["warnings"])
    all_empty = write_jsonl(tmp_path / "e.jsonl", [{"question": "Q", "answer": " "}] * 3)
    with pytest.raises(GarageError, match="Every row \\(3\\) has an empty answer \\(column 'answer'\\)"):
        data.preview(all_empty)


def test_conversation_checks():
    rows = [
        {"messages": [msg("user", "a"), msg("user", "b"), msg("assistant", "c")]},          # merged
        {"messages": [msg("user", "a"), msg("assistant", "b"), msg("user", "unanswered")]},  # trimmed
        {"messages": [msg("user", "only a question")]},                                      # dropped
        {"messages": [msg("assistant", "hi"), msg("user", "q"), msg("assistant", "a")]},     # dropped
        {"messages": [msg("user", "q"), {"role": "tool", "content": "{}"}, msg("assistant", "a")]},  # dropped
        {"messages": [msg("user", "q"), msg("system", "late"), msg("assistant", "a")]},      # dropped
        {"messages": [msg("system", "s1"), msg("system", "s2"), msg("user", "q"), msg("assistant", "a")]},
    ]
    result = data.normalise(rows)
    assert result.rows == 3
    assert result.conversations[0]["messages"] == [msg("user", "a\n\nb"), msg("assistant", "c")]
    assert result.conversations[1]["messages"] == [msg("user", "a"), msg("assistant", "b")]
    assert result.conversations[2]["messages"][0] == msg("system", "s1\n\ns2")
    assert result.repaired == {"not_alternating": 1, "last_not_assistant": 1}
    assert result.dropped == {"no_assistant_turn": 1, "starts_with_assistant": 1, "unsupported_role": 1,
                              "misplaced_system": 1}
    with pytest.raises(GarageError, match="No usable rows"):
        data.normalise([{"messages": [msg("user", "q")]}])


# --- stats and split ----------------------------------------------------------------------
def test_stats_with_tokenizer_and_truncation(tokenizer):
    convs = [
        {"messages": [msg("user", "a b c"), msg("assistant", "d e")]},                          # 1 + 4 + 3 = 8
        {"messages": [msg("system", "s"), msg("user", "a"), msg("assistant", "b")]},            # 1 + 2 + 2 + 2 = 7
        {"messages": [msg("user", " ".join("w" * 20)), msg("assistant", "x " * 10)]},           # 1 + 21 + 11 = 33
        {"messages": [msg("user", "a b c"), msg("assistant", "d e")]},                          # duplicate: 8
    ]
    lengths, how = data.token_lengths(convs, tokenizer)
    assert lengths == [8, 7, 33, 8] and how["method"] == "chat_template"
    direct = tokenizer.apply_chat_template(convs[0]["messages"], tokenize=True)
    assert len(direct["input_ids"] if hasattr(direct, "keys") else direct) == 8
    stats = data.dataset_stats(convs, tokenizer, max_seq_length=8, dropped={"empty_answer": 5})
    assert stats["rows"] == 4 and stats["turns"] == 8 and stats["system_prompts"] == 1
    assert stats["duplicates"] == 1 and stats["empty_answers_dropped"] == 5
    assert stats["tokens"]["p50"] == 8 and stats["tokens"]["p95"] == 33 and stats["tokens"]["max"] == 33
    assert stats["truncated"] == 1
    assert data.dataset_stats(convs, tokenizer, max_seq_length=7)["truncated"] == 3
    text_stats = data.dataset_stats([{"text": "a b c"}], tokenizer)
    assert text_stats["kind"] == "text" and text_stats["tokens"]["max"] == 3


def test_preview_with_tokenizer(tmp_path, tokenizer):
    rows = [{"question": "a b", "answer": "c"}, {"question": "a", "answer": "b c d e"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    result = data.preview(path, tokenizer=tokenizer, max_seq_length=6)
    assert result["stats"]["tokens"]["method"] == "chat_template"
    assert result["stats"]["truncated"] == 1 and any("truncated" in w for w in result["warnings"])


def test_stats_estimate_is_labelled():
    stats = data.dataset_stats([{"messages": [msg("user", "x" * 40), msg("assistant", "y" * 8)]}], max_seq_length=10)
    assert stats["tokens"]["method"] == "estimate" and "estimate" in stats["tokens"]["label"]
    assert stats["tokens"]["max"] == 4 + 10 + 4 + 2 and stats["truncated"] == 1


def test_split_is_deterministic():
    convs = [{"messages": [msg("user", str(i)), msg("assistant", str(i))]} for i in range(50)]
    train, evaluation = data.split(convs, 0.2, seed=1)
    assert len(train) == 40 and len(evaluation) == 10
    assert data.split(convs, 0.2, seed=1) == (train, evaluation)
    assert data.split(convs, 0.2, seed=2)[1] != evaluation
    assert sorted(map(json.dumps, train + evaluation)) == sorted(map(json.dumps, convs))
    assert data.split(convs, 0, seed=1) == (convs, [])
    assert len(data.split(convs[:3], 0.01)[1]) == 1
    with pytest.raises(GarageError, match="eval_fraction"):
        data.split(convs, 1.5)
    with pytest.raises(GarageError, match="1 row"):
        data.split(convs[:1], 0.1)


# --- store ------------------------------------------------------------------------------
CONVS = [{"messages": [msg("user", "Q1"), msg("assistant", "A1")]},
         {"messages": [msg("system", "S"), msg("user", "Q2"), msg("assistant", "A2")]}]


def test_save_list_load_roundtrip():
    user = user_id()
    meta = data.save_dataset(user, "My Data", CONVS, source="d.jsonl", format="qa")
    assert meta["rows"] == 2 and meta["format"] == "qa" and meta["folder"] == "My-Data" and meta["created"]
    assert meta["stats"]["tokens"]["method"] == "estimate"
    path = data.dataset_path(user, "My Data")
    assert path.name == "data.jsonl" and (path.parent / "meta.json").is_file()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == CONVS
    assert data.load_saved(user, "My Data") == CONVS
    listed = data.list_datasets(user)
    assert [m["name"] for m in listed] == ["My Data"] and listed[0]["source"] == "d.jsonl"
    assert not [p for p in path.parent.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_overwrite_refused_unless_asked():
    user = user_id()
    data.save_dataset(user, "set", CONVS)
    with pytest.raises(GarageError, match="already exists.*overwrite"):
        data.save_dataset(user, "set", CONVS[:1])
    assert data.load_saved(user, "set") == CONVS
    data.save_dataset(user, "set", CONVS[:1], overwrite=True)
    assert data.load_saved(user, "set") == CONVS[:1]
    assert len(data.list_datasets(user)) == 1
    # two names that share a folder: the message names the dataset the person can see in their lists
    data.save_dataset(user, "messy qa!", CONVS)
    with pytest.raises(GarageError, match=r"A dataset named 'messy qa!' already exists \('messy qa!' is saved in "
                                          r"the folder 'messy-qa', as this name would be\)"):
        data.save_dataset(user, "messy-qa", CONVS)


def test_users_are_separate():
    alice, bob = user_id(), user_id()
    data.save_dataset(alice, "private", CONVS)
    assert data.list_datasets(bob) == []
    with pytest.raises(GarageError, match="No saved dataset named 'private'"):
        data.load_saved(bob, "private")
    with pytest.raises(GarageError, match="without '/'"):  # a name, never a path into another's folder
        data.save_dataset(bob, "../" + alice + "/datasets/private", CONVS[:1])
    data.save_dataset(bob, "private", CONVS[:1])
    assert data.load_saved(alice, "private") == CONVS
    assert all(Path(m["path"]).is_relative_to(Path(data.dataset_path(bob, m["name"])).parents[1])
               for m in data.list_datasets(bob))


def test_save_validation_delete_and_export(tmp_path):
    user = user_id()
    with pytest.raises(GarageError, match="name"):
        data.save_dataset(user, "  ", CONVS)
    with pytest.raises(GarageError, match="nothing to save"):
        data.save_dataset(user, "x", [])
    with pytest.raises(GarageError, match="Row 1 is not a conversation"):
        data.save_dataset(user, "x", [{"question": "q"}])
    data.save_dataset(user, "gone", CONVS)
    data.delete_dataset(user, "gone")
    assert data.list_datasets(user) == []
    out = data.export_jsonl(CONVS, tmp_path / "out" / "export.jsonl")
    assert data.read_dataset_file(out) == CONVS


def test_import_dataset_and_load_conversations(tmp_path):
    user = user_id()
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "Q", "answer": "A"}, {"question": "Q2", "answer": ""}])
    meta = data.import_dataset(user, "imported", str(path))
    assert meta["rows"] == 1 and meta["format"] == "qa" and meta["stats"]["dropped"] == {"empty_answer": 1}
    assert data.dataset_rows(user, "imported") == [{"messages": [msg("user", "Q"), msg("assistant", "A")]}]
    assert data.dataset_rows(user, str(path)) == data.load_saved(user, "imported")
    with pytest.raises(GarageError, match="No saved dataset"):
        data.dataset_rows(user, "missing")


def test_import_is_cheap():
    code = ("import sys, garage.data; heavy = [m for m in ('datasets', 'transformers', 'torch', 'pandas', "
            "'pyarrow', 'gradio') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_looking_makes_no_workspace():
    """On a Space every cookie-less API call is a new anonymous user: a look leaves no folder behind."""
    from garage import paths
    from garage.augment.pipeline import list_jobs

    user = user_id()
    assert data.list_datasets(user) == [] and list_jobs(user) == []
    with pytest.raises(GarageError, match="No saved dataset named"):
        data.dataset_path(user, "anything")
    assert not paths.user_dir(user).exists()
    data.save_dataset(user, "first", CONVS)  # the first write makes it
    assert paths.datasets_dir(user).is_dir()


def test_a_dataset_name_that_reads_like_a_path_or_hides_is_refused_saying_what_is_accepted(tmp_path):
    from garage import paths

    for name, why in (("../../../../tmp/evil", "starts with '.'"), (".hidden", "starts with '.'"),
                      ("notes/evil", "holds '/'"), ("a\x00b", "control character"), ("n" * 81, "longer than 80")):
        with pytest.raises(GarageError, match=f"A dataset name is at most 80 characters.*{re.escape(why)}"):
            data.save_dataset("namer", name, CONVS)
    assert data.save_dataset("namer", "  Données v2.1 (clean!) ", CONVS)["name"] == "Données v2.1 (clean!)"
    assert [d["name"] for d in data.list_datasets("namer")] == ["Données v2.1 (clean!)"]
    assert not any(p.name.startswith(".") for p in paths.datasets_dir("namer").iterdir())
