"""Augment: documents -> chunks -> pairs (real google-genai client against a local fake Gemini) -> curate -> save."""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import pytest

from garage.augment import (AugmentConfig, AugmentInterrupted, augment, chunk_text, curate, export_pairs,
                            extract_text, list_jobs, load_job, make_backend, plan, save_pairs)
from garage.augment.chunking import estimate_tokens, split_sentences
from tests.fake_llm import Reply, rate_limited, server_error
from garage.errors import GarageError

KEY = "AIzaFAKE-test-key-0123456789-abcdef"


# --- documents made by the tests ------------------------------------------------------

def make_pdf(pages: list, encrypt: bool = False) -> bytes:
    """A minimal valid PDF: each page a list of text lines ([] a blank page), None for an image-only (scanned)
    page, or bytes for a raw content stream."""
    objs, kids, next_id = {}, [], 5
    objs[4] = b"<< /Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray /BitsPerComponent 8 " \
              b"/Length 1 >>\nstream\n\x80\nendstream"  # the scanned page's picture
    for lines in pages:
        page_id, content_id = next_id, next_id + 1
        next_id += 2
        kids.append(page_id)
        if lines is None:
            stream = b"q 300 0 0 500 72 72 cm /Im1 Do Q"
        elif isinstance(lines, bytes):  # a raw content stream
            stream = lines
        else:
            parts = [b"BT /F1 11 Tf 14 TL 72 760 Td"]
            for line in lines:
                esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
                parts.append(b"(" + esc.encode("latin-1") + b") Tj T*")
            stream = b"\n".join(parts + [b"ET"])
        images = b" /XObject << /Im1 4 0 R >>" if lines is None else b""
        objs[page_id] = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R "
                         b">>" + images + b" >> /Contents %d 0 R >>" % content_id)
        objs[content_id] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    objs[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objs[2] = b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids) + b"] /Count %d >>" % len(kids)
    objs[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    extra = b""
    if encrypt:  # the Standard security handler with a user password we do not know
        objs[next_id] = b"<< /Filter /Standard /V 1 /R 2 /O <" + b"ab" * 32 + b"> /U <" + b"cd" * 32 + b"> /P -44 >>"
        extra = b" /Encrypt %d 0 R /ID [<%s> <%s>]" % (next_id, b"01" * 16, b"01" * 16)
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for oid in sorted(objs):
        offsets[oid] = len(out)
        out += b"%d 0 obj\n" % oid + objs[oid] + b"\nendobj\n"
    xref, size = len(out), max(objs) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[oid] for oid in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R" % size + extra + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def make_docx(path: Path, paragraphs: list[str]) -> Path:
    import docx

    document = docx.Document()
    for p in paragraphs:
        document.add_paragraph(p)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Boiling point"
    table.rows[0].cells[1].text = "100 degrees Celsius"
    document.save(path)
    return path


def make_pptx(path: Path, slides: list[tuple[str, str]]) -> Path:
    from pptx import Presentation

    prs = Presentation()
    for title, body in slides:
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    prs.save(path)
    return path


def long_text(n_paragraphs: int = 12, sentences: int = 4) -> str:
    paras = []
    for p in range(n_paragraphs):
        paras.append(" ".join(f"Fact {p}.{s} says that the river number {p} carries {s * 7 + p} tonnes of "
                              f"sediment every spring season." for s in range(sentences)))
    return "\n\n".join(paras)


# --- the fake Gemini ------------------------------------------------------------------

@pytest.fixture
def fake(llm_server, monkeypatch):
    """The fake server, reset, with the real client pointed at it through GOOGLE_GEMINI_BASE_URL."""
    server = llm_server.reset()
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    return server


def cfg(**kw) -> AugmentConfig:
    base = dict(chunk_tokens=120, chunk_overlap=0, num_pairs=24, concurrency=4, max_retries=2,
                retry_base_seconds=0.01, request_timeout=10)
    base.update(kw)
    return AugmentConfig(**base)


# --- ingest ---------------------------------------------------------------------------

def test_extract_every_format_at_once(tmp_path):
    (tmp_path / "a.txt").write_text("Plain text about owls. Owls hunt at night.", encoding="utf-8")
    (tmp_path / "b.md").write_text("# Heading\n\nMarkdown about *bees*. Bees make honey.", encoding="utf-8")
    (tmp_path / "c.html").write_text("<html><head><style>x{}</style><script>var a=1;</script></head><body>"
                                     "<h1>Cats</h1><p>Cats purr when content.</p><table><tr><td>Tabby</td>"
                                     "<td>4 kg</td></tr></table></body></html>", encoding="utf-8")
    (tmp_path / "d.pdf").write_bytes(make_pdf([["Whales are mammals.", "They breathe air."], ["Page two (ok)."]]))
    make_docx(tmp_path / "e.docx", ["Water boils at sea level.", "Ice melts at zero."])
    make_pptx(tmp_path / "f.pptx", [("Volcanoes", "Lava is molten rock."), ("Glaciers", "Ice moves slowly.")])
    docs = extract_text(sorted(tmp_path.iterdir()))
    by_name = {d["name"]: d for d in docs}
    assert set(by_name) == {"a.txt", "b.md", "c.html", "d.pdf", "e.docx", "f.pptx"}
    assert "Owls hunt at night." in by_name["a.txt"]["text"]
    assert "Bees make honey." in by_name["b.md"]["text"]
    assert "Cats purr" in by_name["c.html"]["text"] and "var a" not in by_name["c.html"]["text"]
    assert by_name["c.html"]["text"].splitlines() == ["Cats", "Cats purr when content.", "Tabby | 4 kg"]
    assert "Whales are mammals." in by_name["d.pdf"]["text"] and "Page two (ok)." in by_name["d.pdf"]["text"]
    assert "Ice melts at zero." in by_name["e.docx"]["text"] and "100 degrees Celsius" in by_name["e.docx"]["text"]
    assert "Lava is molten rock." in by_name["f.pptx"]["text"]
    for d in docs:
        assert d["chars"] == len(d["text"]) > 0 and set(d) >= {"file", "text", "chars", "warning"}
    assert "characters" in by_name["a.txt"]["warning"]  # short text is flagged, not refused


def test_pdf_problems_have_clear_messages(tmp_path):
    enc = tmp_path / "locked.pdf"
    enc.write_bytes(make_pdf([["Secret."]], encrypt=True))
    with pytest.raises(GarageError, match="password-protected"):
        extract_text([enc])
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 20)
    with pytest.raises(GarageError, match="damaged"):
        extract_text([bad])
    notpdf = tmp_path / "fake.pdf"
    notpdf.write_text("hello")
    with pytest.raises(GarageError, match="not a PDF"):
        extract_text([notpdf])
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(make_pdf([None, None]))
    with pytest.raises(GarageError, match="no text layer.*OCR"):
        extract_text([scan])
    blank = tmp_path / "blank.pdf"  # nothing on its page at all: no scan to OCR
    blank.write_bytes(make_pdf([[]]))
    with pytest.raises(GarageError, match=r"blank.pdf has no text: its 1 page\(s\) are blank"):
        extract_text([blank])
    outlines = tmp_path / "outlines.pdf"  # text turned into vector shapes: OCR, not blank
    outlines.write_bytes(make_pdf([b"0.2 0.4 0.8 rg 72 72 300 500 re f"]))
    with pytest.raises(GarageError, match="no text layer.*OCR"):
        extract_text([outlines])
    mixed = tmp_path / "mixed.pdf"
    mixed.write_bytes(make_pdf([["Some real text on the first page."], None]))
    [doc] = extract_text([mixed])
    assert "1 of 2 pages have no text" in doc["warning"]


def test_zip_bomb_and_fake_office_files_are_refused_before_parsing(tmp_path):
    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", b"\0" * (30 * 2**20))
    assert bomb.stat().st_size < 100_000
    started = time.monotonic()
    with pytest.raises(GarageError, match="zip bomb"):
        extract_text([bomb])
    assert time.monotonic() - started < 2  # refused from the header, not by inflating it
    (tmp_path / "bomb.pptx").write_bytes(bomb.read_bytes())
    with pytest.raises(GarageError, match="zip bomb"):
        extract_text([tmp_path / "bomb.pptx"])
    fake = tmp_path / "old.docx"
    fake.write_bytes(b"\xd0\xcf\x11\xe0 old word binary")
    with pytest.raises(GarageError, match="not a valid DOCX"):
        extract_text([fake])


def test_empty_unsupported_oversized_and_odd_encodings(tmp_path, monkeypatch):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(GarageError, match="empty"):
        extract_text([empty])
    blank = tmp_path / "blank.md"
    blank.write_text("  \n\n \t\n")
    with pytest.raises(GarageError, match="no text"):
        extract_text([blank])
    with pytest.raises(GarageError, match="save it as .docx"):
        (tmp_path / "x.doc").write_bytes(b"x")
        extract_text([tmp_path / "x.doc"])
    with pytest.raises(GarageError, match="unsupported file type .xyz"):
        (tmp_path / "x.xyz").write_bytes(b"x")
        extract_text([tmp_path / "x.xyz"])
    with pytest.raises(GarageError, match="binary"):
        (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02" * 100)
        extract_text([tmp_path / "bin.txt"])
    big = tmp_path / "big.txt"
    big.write_text("word " * 5000)
    monkeypatch.setenv("GARAGE_MAX_DOC_MB", "0.01")
    with pytest.raises(GarageError, match="over the .* limit"):
        extract_text([big])
    monkeypatch.delenv("GARAGE_MAX_DOC_MB")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Café crème brûlée à la française, très délicieux. ".encode("cp1252") * 10)
    [doc] = extract_text([latin])
    assert "not UTF-8" in doc["warning"] and "crème" in doc["text"]
    docs = extract_text([latin, empty], on_error="warn")
    assert docs[1]["text"] == "" and "empty" in docs[1]["warning"]


# --- chunking and planning ------------------------------------------------------------------

def test_chunks_respect_size_sentences_and_overlap():
    text = long_text(10, 5)
    words = lambda s: len(s.split())  # noqa: E731 - a custom token counter
    chunks = chunk_text(text, chunk_tokens=60, overlap=20, count_tokens=words)
    assert len(chunks) > 5
    for c in chunks:
        assert words(c) <= 60 and c.endswith(".")
    for a, b in zip(chunks, chunks[1:]):  # the next chunk starts with the last sentence(s) of this one
        first = split_sentences(b)[0]
        assert first in a
    for sentence in split_sentences(text):  # nothing lost
        assert any(sentence in c for c in chunks)
    # paragraphs that fit stay whole; no overlap means no repeats
    chunks = chunk_text(text, chunk_tokens=400, overlap=0)
    assert sum(c.count("Fact") for c in chunks) == 50
    assert all(c.split("\n\n")[0].startswith("Fact") for c in chunks)
    # one enormous sentence is cut at words
    assert all(estimate_tokens(c) <= 50 for c in chunk_text("word " * 2000, 50, 0))


def test_plan_counts_calls_time_and_cost():
    docs = [{"name": "a.txt", "text": long_text(12, 4)}]
    p = plan(docs, cfg(num_pairs=36, chunk_tokens=120, concurrency=8))
    assert p["chunks"] == p["llm_calls"] == p["selected_chunks"] > 3
    assert p["pairs_per_chunk"] * p["llm_calls"] >= 36
    assert p["est_seconds"] > 0 and p["est_cost_usd"] > 0 and "$" in p["summary"]
    small = plan(docs, cfg(num_pairs=2))
    assert small["llm_calls"] == 2 and small["pairs_per_chunk"] == 1
    other = plan(docs, cfg(backend="openai", base_url="http://x/v1", model="m"))
    assert other["est_cost_usd"] is None and other["llm_calls"] == p["llm_calls"]
    assert p["warnings"] == [] and "⚠️" not in p["summary"]
    assert plan(docs, cfg(), curate=True)["curate_calls"] > 0


def test_the_plan_warns_when_the_text_cannot_hold_the_pairs_asked():
    note = [{"name": "note.txt", "text": "The ferry leaves the north pier at nine and returns at five. " * 8}]
    p = plan(note, cfg(num_pairs=50))
    assert len(p["warnings"]) == 1 and "50 pairs from about" in p["warnings"][0]
    assert "expect repeated or invented pairs" in p["summary"] and "would suit it (num_pairs)" in p["summary"]
    suggested = int(p["warnings"][0].split("About ")[1].split()[0])
    assert plan(note, cfg(num_pairs=suggested))["warnings"] == []  # what it suggests is accepted


# --- the pipeline -------------------------------------------------------------------------

def write_doc(tmp_path: Path, n: int = 12, name: str = "rivers.txt") -> Path:
    path = tmp_path / name
    path.write_text(long_text(n, 4), encoding="utf-8")
    return path


def test_augment_with_gemini_is_concurrent_and_writes_the_job(fake, tmp_path):
    import google.genai  # noqa: F401  its first import takes over a second (google-genai 3.6): not what is timed

    doc = write_doc(tmp_path)
    fake.latency = 0.25
    seen = []
    started = time.monotonic()
    result = augment([doc], cfg(concurrency=6), user="alice", api_key=KEY,
                     progress=lambda *a: seen.append(a))
    elapsed = time.monotonic() - started
    n = result.total_chunks
    assert n == 12 and result.complete and result.done_chunks == 12 and not result.failed
    assert len(result.pairs) == 24 and all(p["question"] and p["answer"] for p in result.pairs)
    assert elapsed < n * 0.25 * 0.6, "requests did not overlap"  # one at a time would take 3 s
    assert seen[0] == (0, n, 0, None) and seen[-1][:3] == (n, n, 24)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:])) and seen[-1][3] == 0
    gen = [r for r in fake.requests if r["kind"] == "generate"]
    assert len(gen) == n and all(r["model"] == "gemini-2.5-flash" for r in gen)
    body = gen[0]["body"]["generationConfig"]
    assert body["responseMimeType"] == "application/json" and body["responseSchema"]["type"] == "OBJECT"
    job = result.job_dir
    assert job.parent.parent.name == "alice" and job.parent.name == "augment"
    manifest = json.loads((job / "chunks.json").read_text())
    assert len(manifest["chunks"]) == n and manifest["settings"]["model"] == "gemini-2.5-flash"
    lines = (job / "pairs.jsonl").read_text().splitlines()
    assert len(lines) == 24 and {json.loads(x)["chunk"] for x in lines} == set(range(n))
    # the same files and settings again: nothing left to do, no request sent
    fake.requests.clear()
    again = augment([doc], cfg(concurrency=6), user="alice", api_key=KEY)
    assert fake.requests == [] and again.resumed_chunks == n and len(again.pairs) == 24
    # other settings: another job
    other = augment([doc], cfg(num_pairs=3), user="alice", api_key=KEY)
    assert other.job_dir != job and other.total_chunks == 3 and len(other.pairs) == 3


def test_instruction_and_styles_reach_the_prompt(fake, tmp_path):
    doc = write_doc(tmp_path, 3)
    result = augment([doc], cfg(style="cot", num_pairs=3, instruction="For pupils aged 10, in Spanish."),
                     api_key=KEY)
    assert all(p.get("reasoning", "").startswith("Step 1") for p in result.pairs)
    assert "For pupils aged 10, in Spanish." in fake.requests[0]["prompt"]
    assert "Answer:" in result.conversations()[0]["messages"][1]["content"]
    summary = augment([doc], cfg(style="summary", num_pairs=3), api_key=KEY)
    assert len(summary.pairs) == 3 and summary.pairs[0]["question"].startswith("Summarize")
    assert "Fact 0.0" in summary.pairs[0]["question"]


def test_rerun_after_failure_sends_only_the_remaining_chunks(fake, tmp_path):
    doc = write_doc(tmp_path, 10)
    ok_before_outage = 4
    state = {"ok": 0}

    def outage(request):
        if request["kind"] != "generate":
            return None
        if state["ok"] >= ok_before_outage:
            return server_error(503)
        state["ok"] += 1
        return None

    fake.rule = outage
    config = cfg(num_pairs=20, concurrency=1, max_retries=1)
    with pytest.raises(AugmentInterrupted) as info:
        augment([doc], config, user="bob", api_key=KEY)
    partial = info.value.result
    assert "run again" in str(info.value) and "4 of 10 chunks" in str(info.value)
    assert partial.done_chunks == ok_before_outage and len(partial.failed) == 3  # stopped after 3 in a row
    _, pairs, done = load_job(partial.job_dir)
    assert len(done) == ok_before_outage and len(pairs) == 2 * ok_before_outage  # nothing lost
    texts = {c["index"]: c["text"] for c in partial.chunks}

    with open(partial.job_dir / "pairs.jsonl", "a") as fh:  # a crash in the middle of a write
        fh.write('{"chunk": 9, "question": "torn')
    assert len(load_job(partial.job_dir)[1]) == 2 * ok_before_outage

    fake.rule = None
    fake.requests.clear()
    result = augment([doc], config, user="bob", api_key=KEY)
    asked = fake.documents()
    assert sorted(asked) == sorted(texts[i] for i in range(10) if i not in done)  # only what was missing
    assert len(asked) == 10 - ok_before_outage
    assert result.complete and result.resumed_chunks == ok_before_outage and len(result.pairs) == 20
    assert sorted({p["chunk"] for p in result.pairs}) == list(range(10))


def test_stop_event_and_cancelling_callback(fake, tmp_path):
    import threading

    doc = write_doc(tmp_path, 6)
    stop = threading.Event()

    def progress(done, total, pairs, eta):
        if done >= 2:
            stop.set()

    with pytest.raises(AugmentInterrupted, match="Stopped. 2 of 6 chunks") as info:
        augment([doc], cfg(num_pairs=6, concurrency=1), user="stopper", api_key=KEY, progress=progress,
                stop=stop)
    assert info.value.result.done_chunks == 2 and len(fake.documents()) == 2
    assert "/" not in str(info.value) and "Continue the chosen job" in str(info.value)  # no server path shown

    class Cancel(Exception):
        pass

    def cancel(done, total, pairs, eta):
        if done >= 3:  # the rerun resumes at 2 done
            raise Cancel()

    with pytest.raises(Cancel):
        augment([doc], cfg(num_pairs=6, concurrency=1), user="stopper", api_key=KEY, progress=cancel)
    _, pairs, done = load_job(info.value.result.job_dir)
    assert len(done) == 3 and len(pairs) == 3  # the chunk before the cancel was saved


def test_quota_exhausted_and_rate_limits(fake, tmp_path):
    doc = write_doc(tmp_path, 6)
    state = {"ok": 0}

    def quota(request):
        if state["ok"] >= 2:
            return rate_limited("0")
        state["ok"] += 1
        return None

    fake.rule = quota
    with pytest.raises(AugmentInterrupted, match="quota is exhausted") as info:
        augment([doc], cfg(num_pairs=6, concurrency=1, max_retries=2), user="quota", api_key=KEY)
    assert info.value.result.done_chunks == 2 and len(info.value.result.pairs) == 2
    # a Retry-After longer than we wait means the quota is spent: stop at once, do not sleep
    fake.rule = lambda r: rate_limited("3600")
    started = time.monotonic()
    with pytest.raises(AugmentInterrupted, match="quota is exhausted"):
        augment([doc], cfg(num_pairs=6, concurrency=1, max_retry_wait=30), user="quota", api_key=KEY,
                job="other")
    assert time.monotonic() - started < 5


def test_the_key_never_leaks(fake, tmp_path, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    doc = write_doc(tmp_path, 3)
    fake.valid_keys = {"the-right-key"}  # the fake's error message echoes the wrong key back
    with pytest.raises(GarageError) as info:
        augment([doc], cfg(num_pairs=3), user="carol", api_key=KEY)
    assert "The Gemini key was rejected" in str(info.value) and KEY not in str(info.value)
    fake.valid_keys = None
    fake.rule = lambda r: Reply(404, error=f"models/nope is not found for key {r['key']}")
    with pytest.raises(GarageError) as info:
        augment([doc], cfg(num_pairs=3, model="nope"), user="carol", api_key=KEY)
    assert "404" in str(info.value) and "***" in str(info.value) and KEY not in str(info.value)
    fake.rule = lambda r: Reply(text=json.dumps({"pairs": [{"question": f"q {r['key']}?", "answer": "a b c"}]}))
    result = augment([doc], cfg(num_pairs=3), user="carol", api_key=KEY)
    assert result.pairs and all(KEY not in p["question"] for p in result.pairs)
    for path in Path(os.environ["GARAGE_HOME"]).rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in caplog.text and KEY not in repr(make_backend(cfg(), api_key=KEY))
    assert all(r["key"] == KEY for r in fake.requests)  # it was sent, as a header


def test_missing_key_is_a_clear_error(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("GARAGE_HOME", str(tmp_path / "home"))
    with pytest.raises(GarageError, match="GEMINI_API_KEY"):
        augment([write_doc(tmp_path, 2)], cfg(num_pairs=2), user="keyless")
    assert list_jobs("keyless") == []  # nothing was sent, so no empty job is left in Earlier jobs


# --- curation, saving, the CLI ----------------------------------------------------------

def test_curate_rates_dedups_and_checks_support(fake, tmp_path):
    chunks = {0: "The Rhine flows through Basel and Cologne before reaching the North Sea near Rotterdam.",
              1: "Copper conducts electricity well and is used in most household wiring."}
    pairs = [
        {"chunk": 0, "question": "Which cities does the Rhine flow through?", "answer": "The Rhine flows through "
         "Basel and Cologne."},
        {"chunk": 0, "question": "Which cities does the Rhine flow through?", "answer": "It flows through Basel "
         "and Cologne."},                                                                    # duplicate
        {"chunk": 0, "question": "Where does the Rhine end?", "answer": "In the North Sea near Rotterdam, BAD."},
        {"chunk": 1, "question": "Why is copper used in wiring?", "answer": "Copper conducts electricity well "
         "UNSUPPORTED."},
        {"chunk": 1, "question": "Who discovered copper?", "answer": "Ancient Mesopotamian metallurgists "
         "discovered smelting around seven thousand years ago."},                          # not in the text
        {"chunk": 1, "question": "What is copper used for?", "answer": "Copper is used in household wiring."},
        {"chunk": 1, "question": "   ", "answer": "x"},
    ]
    backend = make_backend(cfg(), api_key=KEY)
    progress = []
    out = curate(pairs, backend, threshold=7, chunks=chunks, progress=lambda *a: progress.append(a))
    assert [p["question"] for p in out.kept] == ["Which cities does the Rhine flow through?",
                                                  "What is copper used for?"]
    assert all(p["rating"] == 9 for p in out.kept)
    reasons = {p["answer"][:20]: p["reason"] for p in out.dropped}
    assert "near-duplicate of pair #1" in reasons["It flows through Bas"]
    assert "below the threshold 7" in reasons["In the North Sea nea"]
    assert "unsupported" in reasons["Copper conducts elec"]
    assert "not supported by its text" in reasons["Ancient Mesopotamian"]
    assert "empty" in reasons["x"]
    rated = [r for r in fake.requests if r["kind"] == "rate"]
    assert len(rated) == 2 and "North Sea near Rotterdam" in rated[0]["prompt"] + rated[1]["prompt"]
    assert progress[-1][:2] == (2, 2)
    cheap = curate(pairs, None, chunks=chunks)  # no rater: only the cheap checks
    assert len(cheap.kept) == 4 and "kept 4 of 7" in cheap.summary() and "1 near-duplicates" in cheap.summary()
    assert [d["check"] for d in out.dropped] == ["duplicate", "rating", "unsupported", "lexical", "empty"]
    assert out.kept[0]["reason"] == "rated 9/10"
    # an unreadable rating reply drops the batch with a reason, it does not crash
    fake.rule = lambda r: Reply(text="sorry, I cannot rate these")
    broken = curate(pairs[:1], backend, chunks=chunks)
    assert not broken.kept and "could not be read" in broken.dropped[0]["reason"]
    assert backend.stats.parse_failures == 1


def test_curating_again_asks_only_about_pairs_it_has_not_rated(fake, tmp_path):
    from garage.augment.curate import RememberedRatings

    chunks = {0: "The Rhine flows through Basel and Cologne before reaching the North Sea near Rotterdam."}
    pairs = [{"chunk": 0, "question": "Which cities does the Rhine flow through?",
              "answer": "The Rhine flows through Basel and Cologne."},
             {"chunk": 0, "question": "Where does the Rhine end?", "answer": "In the North Sea near Rotterdam, BAD."}]
    backend, path = make_backend(cfg(), api_key=KEY), tmp_path / "ratings.jsonl"
    first = curate(pairs, backend, threshold=7, chunks=chunks, ratings=RememberedRatings(path))
    assert len(first.kept) == 1 and len(fake.requests) == 1
    fake.requests.clear()
    lenient = curate(pairs, backend, threshold=1, chunks=chunks, ratings=RememberedRatings(path))  # a new process
    assert fake.requests == [] and len(lenient.kept) == 2 and "2 rating(s) remembered" in lenient.summary()
    assert [p["rating"] for p in lenient.kept] == [p.get("rating") for p in first.kept + first.dropped]
    new = {"chunk": 0, "question": "Name a city on the Rhine.", "answer": "Basel is on the Rhine."}
    more = curate(pairs + [new], backend, threshold=7, chunks=chunks, ratings=RememberedRatings(path))
    assert len(fake.requests) == 1 and new["question"] in fake.requests[0]["prompt"]
    assert "Where does the Rhine end" not in fake.requests[0]["prompt"] and len(more.kept) == 2
    fake.requests.clear()
    curate(pairs, backend, chunks=chunks, instruction="For children.", ratings=RememberedRatings(path))
    assert len(fake.requests) == 1  # another instruction: rated afresh


def test_save_and_export(tmp_path):
    pairs = [{"chunk": 0, "question": "Q1?", "answer": "A1."},
             {"chunk": 1, "question": "Q2?", "answer": "A2.", "reasoning": "Step 1: think."}]
    meta = save_pairs("dora", "my-qa", pairs, source="augment: test")
    data = Path(meta["path"])
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    assert meta["rows"] == 2 and data.parent.parent.name == "datasets"
    assert rows[0] == {"messages": [{"role": "user", "content": "Q1?"}, {"role": "assistant", "content": "A1."}]}
    assert rows[1]["messages"][1]["content"] == "Step 1: think.\n\nAnswer: A2."
    assert (data.parent / "meta.json").exists()
    with pytest.raises(GarageError, match="already exists"):
        save_pairs("dora", "my-qa", pairs)
    out = export_pairs(pairs, tmp_path / "out" / "qa.jsonl", system="Be brief.")
    first = json.loads(out.read_text().splitlines()[0])
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}
    with pytest.raises(GarageError, match="nothing"):
        export_pairs([{"question": "", "answer": ""}], tmp_path / "none.jsonl")


def test_cli_runs_and_reports_errors_in_one_line(fake, tmp_path, monkeypatch, capsys):
    import argparse

    from garage.augment import cli

    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    doc = write_doc(tmp_path, 4)
    out = tmp_path / "qa.jsonl"

    def run(*argv):
        parser = argparse.ArgumentParser()
        cli.add_arguments(parser)
        return cli.run(parser.parse_args([str(a) for a in argv]))

    assert run(doc, "--pairs", 8, "--out", out, "--concurrency", 3, "--chunk-tokens", 120, "--overlap", 0,
               "--save-as", "cli-set", "--user", "erin") == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 8 and rows[0]["messages"][0]["role"] == "user"
    err = capsys.readouterr().err
    assert "kept 8 of 8" in err and "saved dataset 'cli-set'" in err and KEY not in err
    assert run(doc, "--out", out, "--plan") == 0
    assert run(tmp_path / "missing.pdf", "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: missing.pdf: file not found")
    monkeypatch.setenv("GEMINI_API_KEY", "wrong")
    fake.valid_keys = {KEY}
    assert run(doc, "--out", tmp_path / "x.jsonl", "--job", "wrongkey") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "The Gemini key was rejected" in last


def test_a_second_generate_of_a_running_job_is_refused_and_nothing_is_sent_twice(fake, tmp_path):
    """A second tab, or the page reloaded while the first Generate still runs, presses Generate on the same job."""
    import threading

    doc = write_doc(tmp_path, 6)
    fake.latency = 0.3
    first: dict = {}
    running = threading.Thread(target=lambda: first.update(result=augment([doc], cfg(num_pairs=6, concurrency=1),
                                                                        user="bob", api_key=KEY)))
    running.start()
    try:
        wait_until = time.monotonic() + 10
        while not fake.documents() and time.monotonic() < wait_until:  # the first is under way
            time.sleep(0.02)
        with pytest.raises(GarageError, match="already generating"):
            augment([doc], cfg(num_pairs=6, concurrency=1), user="bob", api_key=KEY)
        other = augment([doc], cfg(num_pairs=6, concurrency=1), user="carol", api_key=KEY)  # another user's job
    finally:
        running.join()
    assert first["result"].complete and other.complete
    assert len(fake.documents()) == 12  # 6 chunks each for bob and carol: none twice
    again = augment([doc], cfg(num_pairs=6, concurrency=1), user="bob", api_key=KEY)  # after it ended: its pairs
    assert again.resumed_chunks == 6 and len(again.pairs) == 6 and len(fake.documents()) == 12


def test_list_jobs_finds_earlier_jobs_newest_first_and_which_one_is_generating(fake, tmp_path, monkeypatch):
    """What a reloaded page lists: each job of the user's, how far it got, and whether a Generate still runs."""
    import threading

    from garage import files, paths
    from garage.augment.pipeline import GENERATING

    monkeypatch.setenv("GARAGE_HOME", str(tmp_path / "home"))  # no other test's jobs
    doc = write_doc(tmp_path, 6)
    assert list_jobs("erin") == []
    done = augment([doc], cfg(num_pairs=6, concurrency=1), user="erin", api_key=KEY)
    stop = threading.Event()
    with pytest.raises(AugmentInterrupted) as info:  # stopped after 2 of its 3 chunks
        augment([doc], cfg(num_pairs=3, concurrency=1), user="erin", api_key=KEY, stop=stop,
                progress=lambda d, *_: d >= 2 and stop.set())
    partial = info.value.result
    (paths.user_dir("erin") / "augment" / "no-manifest").mkdir()  # a Generate that failed before writing one
    jobs = list_jobs("erin")
    assert [j["name"] for j in jobs] == [partial.job_dir.name, done.job_dir.name]  # newest first
    assert [(j["done_chunks"], j["total_chunks"], j["pairs"]) for j in jobs] == [(2, 3, 2), (6, 6, 6)]
    assert all(j["created"] and not j["generating"] for j in jobs)
    state, held = files.try_lock(done.job_dir / GENERATING)  # as a running Generate holds it
    try:
        assert state == "mine" and [j["generating"] for j in list_jobs("erin")] == [False, True]
    finally:
        files.release(held)
    assert not any(j["generating"] for j in list_jobs("erin"))  # listing never keeps the lock
    assert list_jobs("frank") == []  # another user's workspace


def test_a_jobs_listing_reads_the_manifest_head_only_and_right(tmp_path):
    """The chunk texts come last in a manifest and are nearly all of it; the head must parse the same wherever the
    64 KiB reads fall, and a manifest of another layout is read whole."""
    from garage.augment.pipeline import _manifest_head, _write_json_atomic

    head = {"version": 1, "fingerprint": "f", "created": "2026-11-27T10:00:00+00:00", "settings": {"num_pairs": 9},
            "files": [{"name": f"doc {i}.pdf"} for i in range(3000)], "pairs_per_chunk": 3,
            "selected": list(range(20000))}  # a head larger than one read
    for shift in range(0, 70000, 7001):  # the key at many offsets from a read's boundary
        manifest = {**head, "fingerprint": "f" * shift, "chunks": [{"index": 0, "text": "x " * 200000}]}
        _write_json_atomic(tmp_path / "chunks.json", manifest)
        assert _manifest_head(tmp_path / "chunks.json") == {**head, "fingerprint": "f" * shift}
    (tmp_path / "chunks.json").write_text(json.dumps({**head, "chunks": []}))  # no indent: read whole
    assert _manifest_head(tmp_path / "chunks.json")["selected"] == head["selected"]


def test_an_opened_job_says_why_it_stopped(tmp_path):
    from garage.augment.pipeline import DONE, _chunk_states

    done = tmp_path / DONE

    def lines(*rows):
        done.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return _chunk_states(tmp_path, repair=False)[1]

    assert lines() == ""
    # a chunk that failed stays the reason while it is not done, whatever other chunks did after it
    assert lines({"chunk": 0, "status": "failed", "error": "HTTP 503"}, {"chunk": 1, "status": "done"}) == "HTTP 503"
    assert lines({"chunk": 0, "status": "failed", "error": "HTTP 503"}, {"chunk": 0, "status": "done"}) == ""
    assert lines({"chunk": 0, "status": "failed", "error": "HTTP 503"},
                 {"stopped": "The key was rejected."}) == "The key was rejected."
