"""Documents in, plain text out: PDF, DOCX, PPTX, TXT, Markdown and HTML.

The parsing itself is synthetic-data-kit's (``synthetic_data_kit.parsers``); this
module puts guards in front of it so a bad upload ends in a message a person can
act on instead of a stack trace, a hung worker or a full disk:

* a size limit per document (``GARAGE_MAX_DOC_MB``, default 50);
* Office files (zip archives) are checked before parsing: entry count, total
  uncompressed size and compression ratio, then every entry is read through once
  with a byte counter, so a zip bomb is refused without ever being inflated;
* PDFs: damaged, password-protected, and scanned (no text layer: OCR needed);
* empty documents, binary files with a text extension, unknown encodings.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable

from garage.errors import GarageError

TEXT_EXTS = {".txt", ".text", ".md", ".markdown", ".rst"}
HTML_EXTS = {".html", ".htm", ".xhtml"}
OFFICE_EXTS = {".docx", ".pptx"}
SUPPORTED = sorted(TEXT_EXTS | HTML_EXTS | OFFICE_EXTS | {".pdf"})
_OLD_OFFICE = {".doc": ".docx", ".ppt": ".pptx", ".rtf": ".docx"}

MAX_ZIP_ENTRIES = 10_000
MAX_ZIP_RATIO = 100            # uncompressed / compressed, over the whole archive
ZIP_RATIO_FLOOR_MB = 10        # small archives may compress well; the ratio applies above this size
SHORT_TEXT_CHARS = 200


def max_doc_bytes() -> int:
    """The largest document accepted, from ``GARAGE_MAX_DOC_MB`` (default 50 MB)."""
    try:
        mb = float(os.environ.get("GARAGE_MAX_DOC_MB", "50"))
    except ValueError:
        mb = 50.0
    return int(mb * 1024 * 1024)


def max_unzipped_bytes() -> int:
    """The most an Office file may inflate to: ten times the document limit."""
    return 10 * max_doc_bytes()


def extract_text(paths: Iterable[str | os.PathLike] | str | os.PathLike, *,
                 on_error: str = "raise") -> list[dict]:
    """Read each document and return ``[{"file", "name", "text", "chars", "warning"}]``.

    ``warning`` is ``None`` or a sentence about something worth knowing (a few
    scanned pages, a guessed encoding, very little text). With ``on_error="raise"``
    (default) the first unreadable document raises ``GarageError`` naming it; with
    ``on_error="warn"`` it comes back with empty text and the reason as its warning.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise GarageError("No documents given: upload at least one PDF, DOCX, PPTX, TXT, Markdown or HTML file.")
    out = []
    for path in paths:
        path = Path(path)
        try:
            text, warning = _extract_one(path)
        except GarageError as exc:
            if on_error != "warn":
                raise
            text, warning = "", str(exc)
        out.append({"file": str(path), "name": path.name, "text": text, "chars": len(text), "warning": warning})
    return out


# --- one document ---------------------------------------------------------

def _extract_one(path: Path) -> tuple[str, str | None]:
    name = path.name
    if not path.is_file():
        raise GarageError(f"{name}: file not found.")
    ext = path.suffix.lower()
    if ext in _OLD_OFFICE:
        raise GarageError(f"{name}: old {ext} files are not supported; save it as {_OLD_OFFICE[ext]} and upload that.")
    if ext not in SUPPORTED:
        raise GarageError(f"{name}: unsupported file type {ext or '(none)'}. Accepted: {', '.join(SUPPORTED)}.")
    size = path.stat().st_size
    limit = max_doc_bytes()
    if size > limit:
        raise GarageError(f"{name} is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB limit per document "
                          "(GARAGE_MAX_DOC_MB). Split it into smaller files.")
    if size == 0:
        raise GarageError(f"{name} is empty (0 bytes).")

    warnings: list[str] = []
    if ext == ".pdf":
        text = _read_pdf(path, warnings)
    elif ext in OFFICE_EXTS:
        check_zip(path)
        text = _read_office(path, ext)
    elif ext in HTML_EXTS:
        text = _read_html(path, warnings)
    else:
        text = _read_text(path, warnings)

    text = clean_text(text)
    if not text:
        raise GarageError(f"{name} has no text in it (it is empty, or holds only images).")
    if len(text) < SHORT_TEXT_CHARS:
        warnings.append(f"only {len(text)} characters of text; expect few pairs")
    return text, ("; ".join(warnings) or None)


def clean_text(text: str) -> str:
    """Normalise line ends and page breaks, trim trailing spaces, squeeze blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x0c", "\n\n").replace("\ufeff", "")
    text = text.replace("\x00", "")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


# --- PDF ------------------------------------------------------------------

def _read_pdf(path: Path, warnings: list[str]) -> str:
    name = path.name
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if b"%PDF-" not in head:
        raise GarageError(f"{name} is not a PDF (or is damaged): it lacks the PDF header. Re-export it as PDF.")
    from pdfminer.pdfdocument import PDFEncryptionError, PDFPasswordIncorrect
    from synthetic_data_kit.parsers.pdf_parser import PDFParser

    try:
        text = PDFParser().parse(str(path))
    except PDFPasswordIncorrect:
        raise GarageError(f"{name} is password-protected. Remove the password (open it and save or print "
                          "to a new PDF) and upload it again.") from None
    except PDFEncryptionError as exc:
        raise GarageError(f"{name} is encrypted in a way that cannot be read ({type(exc).__name__}). "
                          "Save an unprotected copy and upload that.") from None
    except Exception as exc:  # pdfminer raises many types on broken files
        raise GarageError(f"{name} looks damaged and could not be read as a PDF ({type(exc).__name__}). "
                          "Re-export it from the original program.") from None

    pages = text.split("\x0c")
    if pages and not pages[-1].strip():
        pages = pages[:-1]  # pdfminer ends every page with a form feed
    blank = sum(1 for p in pages if not p.strip())
    if not text.strip():
        n_pages = _pdf_page_count(path)
        if n_pages == 0:
            raise GarageError(f"{name} has no readable pages; it looks damaged. Re-export it as PDF.")
        if not _pdf_draws_something(path):
            raise GarageError(f"{name} has no text: its {n_pages} page(s) are blank. Upload the document with the "
                              "text in it.")
        raise GarageError(f"{name} has no text layer ({n_pages} page(s) of images only: a scan?). "
                          "OCR is needed first, e.g. `ocrmypdf in.pdf out.pdf`, then upload the result.")
    if blank:
        warnings.append(f"{blank} of {len(pages)} pages have no text (scanned pages need OCR)")
    return text


def _pdf_page_count(path: Path) -> int:
    try:
        from pdfminer.pdfpage import PDFPage

        with open(path, "rb") as fh:
            return sum(1 for _ in PDFPage.get_pages(fh))
    except Exception:
        return 0


def _pdf_draws_something(path: Path) -> bool:
    """Whether any page paints something (an image, inline or not, or vector shapes: a scan, or text turned into
    outlines) rather than nothing at all; when unsure, True (OCR is the advice then)."""
    try:
        from pdfminer.pdfpage import PDFPage
        from pdfminer.pdftypes import resolve1

        with open(path, "rb") as fh:
            for page in PDFPage.get_pages(fh):
                for stream in page.contents or []:
                    tokens = set(resolve1(stream).get_data().split())
                    if tokens & PAINTING:
                        return True
        return False
    except Exception:
        return True


# PDF content operators that paint: an XObject or inline image, fills and strokes of paths, shadings
PAINTING = {b"Do", b"BI", b"f", b"F", b"f*", b"S", b"s", b"B", b"B*", b"b", b"b*", b"sh"}


# --- DOCX / PPTX ----------------------------------------------------------

def check_zip(path: Path) -> None:
    """Refuse a zip (DOCX/PPTX) that is not one, or that would inflate too far. Nothing is extracted."""
    name = path.name
    kind = path.suffix.lower().lstrip(".").upper()
    if not zipfile.is_zipfile(path):
        raise GarageError(f"{name} is not a valid {kind} file (it is not an Office zip archive; "
                          f"an old-format file renamed?). Save it as {kind} again and upload that.")
    cap = max_unzipped_bytes()
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ZIP_ENTRIES:
                raise GarageError(f"{name} holds {len(infos)} files inside; a real {kind} has far fewer. "
                                  "Refused as unsafe.")
            declared = sum(i.file_size for i in infos)
            packed = max(1, sum(i.compress_size for i in infos))
            if declared > cap:
                raise GarageError(f"{name} would unpack to {declared / 2**20:.0f} MB (limit {cap / 2**20:.0f} MB). "
                                  "Refused as a possible zip bomb.")
            if declared > ZIP_RATIO_FLOOR_MB * 2**20 and declared / packed > MAX_ZIP_RATIO:
                raise GarageError(f"{name} is compressed {declared / packed:.0f} to 1, far beyond a real {kind}. "
                                  "Refused as a possible zip bomb.")
            # Read every entry once, counting bytes: the sizes in the header could lie.
            total = 0
            for info in infos:
                if info.is_dir():
                    continue
                with zf.open(info) as member:
                    seen = 0
                    while True:
                        block = member.read(1 << 20)
                        if not block:
                            break
                        seen += len(block)
                        total += len(block)
                        if seen > info.file_size or total > cap:
                            raise GarageError(f"{name} inflates beyond its declared size. "
                                              "Refused as a possible zip bomb.")
    except GarageError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise GarageError(f"{name} is a damaged {kind} file ({type(exc).__name__}). "
                          "Open and save it again, then upload it.") from None


def _read_office(path: Path, ext: str) -> str:
    if ext == ".docx":
        from synthetic_data_kit.parsers.docx_parser import DOCXParser as Parser
    else:
        from synthetic_data_kit.parsers.ppt_parser import PPTParser as Parser
    try:
        return Parser().parse(str(path))
    except Exception as exc:
        kind = ext.lstrip(".").upper()
        raise GarageError(f"{path.name} could not be read as {kind} ({type(exc).__name__}); it may be damaged "
                          f"or another format with this extension. Save it again as {kind}.") from None


# --- text and HTML --------------------------------------------------------

def _decode(path: Path, warnings: list[str]) -> tuple[str, bool]:
    """The file's text and whether it was UTF-8 already."""
    data = path.read_bytes()
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise GarageError(f"{path.name} looks like a binary file, not text. Upload the original document "
                          f"(PDF, DOCX...) instead of renaming it to {path.suffix}.")
    try:
        return data.decode("utf-8-sig"), True
    except UnicodeDecodeError:
        pass
    encoding = None
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        encoding = best.encoding if best else None
    except Exception:
        encoding = None
    # Single-byte guesses are often a coin toss between code pages; Windows-1252 is the usual one.
    if encoding is None or re.match(r"(cp125\d|iso8859|latin|mac_)", encoding):
        try:
            data.decode("cp1252")
            encoding = "cp1252"
        except UnicodeDecodeError:
            pass
    encoding = encoding or "latin-1"
    warnings.append(f"not UTF-8; read as {encoding}")
    return data.decode(encoding, errors="replace"), False


def _read_text(path: Path, warnings: list[str]) -> str:
    text, is_utf8 = _decode(path, warnings)
    if is_utf8 and not text.startswith("\ufeff"):
        from synthetic_data_kit.parsers.txt_parser import TXTParser

        return TXTParser().parse(str(path))
    return text


HTML_BLOCKS = ("p", "div", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "dl", "dt", "dd", "table",
               "tr", "caption", "section", "article", "main", "nav", "aside", "header", "footer", "blockquote", "pre",
               "figcaption", "title")
HTML_CELLS = ("td", "th")  # a row's cells stay on its line, apart


def _read_html(path: Path, warnings: list[str]) -> str:
    from synthetic_data_kit.parsers.html_parser import HTMLParser

    text, _ = _decode(path, warnings)
    # The parser reads UTF-8 only, and joins the text of neighbouring blocks ('<h1>Bridge</h1><p>The…' gave
    # 'BridgeThe…' on a minified page): hand it a UTF-8 copy with a line break after each block.
    with tempfile.TemporaryDirectory(prefix="garage-html-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(_with_line_breaks(text), encoding="utf-8")
        return HTMLParser().parse(str(copy))


def _with_line_breaks(html: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup.find_all(HTML_BLOCKS):
        tag.insert_after("\n")
    for tag in soup.find_all(HTML_CELLS):
        if tag.find_previous_sibling(HTML_CELLS) is not None:
            tag.insert_before(" | ")
    return str(soup)
