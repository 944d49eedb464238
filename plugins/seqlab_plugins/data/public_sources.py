"""Text of public data sets in their published layouts, as documents in the 12 languages of the study.

Each source has its own layout and language codes (NTREX and UDHR name files by ISO 639-3, TICO by a pair
folder `en-XX`, lingua by ISO 639-1); this module maps them all to ISO 639-1 and yields the lines (UDHR: the
paragraphs) of every file. `extract` then drops what must not be trained on and counts every drop: empty
lines, lines equal to an eval set's sentence (after `normalise`) and exact duplicates within a source and
language (TICO pairs every language with the same English sentences).
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

from seqlab.errors import DataError

LANGS = ("ar", "de", "en", "es", "fr", "hi", "it", "ja", "mr", "pt", "ta", "te")
ISO3 = {"arb": "ar", "ara": "ar", "deu": "de", "eng": "en", "spa": "es", "fra": "fr", "hin": "hi", "ita": "it",
        "jpn": "ja", "mar": "mr", "por": "pt", "tam": "ta", "tel": "te"}

# The folder of each source under the root, and the layout an error message shows.
FOLDERS = {
    "ntrex128": "ntrex128/NTREX-128",
    "tico19": "tico19/testsets",
    "lingua": "lingua-testdata/language-testdata/sentences",
    "udhr": "udhr/declaration",
}
LAYOUTS = {
    "ntrex128": "ntrex128/NTREX-128/newstest2019-ref.<iso639-3>.txt and newstest2019-src.eng.txt",
    "tico19": "tico19/testsets/en-<lang>/tico19-test.en and tico19-test.<lang>",
    "lingua": "lingua-testdata/language-testdata/sentences/<lang>.txt",
    "udhr": "udhr/declaration/<iso639-3>[_<variant>].html",
}
# Eval sets whose sentences are never trained on: the files holding them, relative to the root.
EVAL_SETS = {"flores200": ("flores200/dev/*.dev", "flores200/devtest/*.devtest")}
EVAL_LAYOUTS = {"flores200": "flores200/dev/<code>.dev and flores200/devtest/<code>.devtest"}

_NTREX = re.compile(r"^newstest2019-(?:ref|src)\.(\w+)\.txt$")
# A field written by a CSV writer: wrapped in quotes, inner quotes doubled. Without a doubled quote inside,
# a line in quotes is most often a quoted sentence, so only lines with one are taken for the artefact.
_CSV_FIELD = re.compile(r'^"((?:[^"]|"")*)"$')


def normalise(text: str) -> str:
    """The form in which texts are compared with eval sentences: NFKC, casefolded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def unquote_csv(line: str) -> str:
    """`"a ""b"" c"` -> `a "b" c`: the CSV quoting that some FLORES lines and TICO's en-ta pair carry."""
    match = _CSV_FIELD.match(line)
    if match is None or '""' not in match.group(1):
        return line
    return match.group(1).replace('""', '"').strip()


def source_files(root: Path, source: str) -> list[tuple[Path, str]]:
    """(file, language) of every file of `source` in one of LANGS, in path order; other languages are skipped."""
    folder = root / FOLDERS[source]
    found: list[tuple[Path, str | None]] = []
    if source == "ntrex128":
        for path in folder.glob("newstest2019-*.txt"):
            match = _NTREX.match(path.name)
            found.append((path, ISO3.get(match.group(1)) if match else None))
    elif source == "tico19":
        for pair in folder.glob("en-*"):
            lang = pair.name[3:].split("_")[0]  # es_LA, pt_BR: regional variants of es and pt
            found += [(pair / "tico19-test.en", "en"), (pair / f"tico19-test.{pair.name[3:]}", lang)]
    elif source == "lingua":
        found = [(path, path.stem) for path in folder.glob("*.txt")]
    else:
        found = [(path, ISO3.get(path.stem.split("_")[0])) for path in folder.glob("*.html")]
    return sorted((path, lang) for path, lang in found if lang in LANGS and path.is_file())


def eval_files(root: Path, name: str) -> list[Path]:
    return sorted(path for pattern in EVAL_SETS[name] for path in root.glob(pattern) if path.is_file())


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read as UTF-8 text ({err})") from None


def read_lines(path: Path) -> list[str]:
    """The lines of a text file, without line ends ("\\n" only, as the corpus reader splits documents)."""
    return [line.removesuffix("\r") for line in read_text(path).split("\n")]


def excluded_texts(paths: list[Path]) -> set[str]:
    """Normalised lines of the files; a CSV-quoted line also in its unquoted form, the sentence it stands for."""
    return {normalise(form) for path in paths for line in read_lines(path) for form in (line, unquote_csv(line))
            if form.strip()}


class _Paragraphs(HTMLParser):
    """The text of each <p>, <li> and <h1>-<h4>; an element inside another (UDHR's <li><p>) ends the outer's text
    so far, so every piece of text lands in exactly one paragraph. Nothing from <head> is kept."""

    BLOCKS = {"p", "li", "h1", "h2", "h3", "h4"}
    HIDDEN = {"head", "title", "script", "style"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # entities arrive unescaped in handle_data
        self.paragraphs: list[str] = []
        self._pieces: list[str] = []
        self._blocks = 0
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1
        elif tag in self.BLOCKS:
            self.flush()
            self._blocks += 1
        elif tag == "br":
            self._pieces.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self.BLOCKS:
            self.flush()
            self._blocks = max(0, self._blocks - 1)

    def handle_data(self, data: str) -> None:
        if self._blocks and not self._hidden:
            self._pieces.append(data)

    def flush(self) -> None:
        text = " ".join("".join(self._pieces).split())
        if text:
            self.paragraphs.append(text)
        self._pieces = []


def html_paragraphs(html: str) -> list[str]:
    parser = _Paragraphs()
    parser.feed(html)
    parser.close()
    parser.flush()  # text of an element the file never closes
    return parser.paragraphs


def units(path: Path, source: str) -> list[str]:
    """The lines (UDHR: paragraphs) of one file, empty ones included so the caller counts them."""
    if source == "udhr":
        return html_paragraphs(read_text(path))
    lines = [line.strip() for line in read_lines(path)]
    if source == "tico19":
        # Checked in the published files: only TICO's en-ta pair carries CSV quoting (117 English lines).
        lines = [unquote_csv(line) for line in lines]
    if lines and not lines[-1]:
        lines.pop()  # the newline that ends the last line starts no line
    return lines


@dataclass
class Extraction:
    """Documents per (source, lang) and what was dropped, counted per (source, lang)."""

    documents: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    empty: Counter = field(default_factory=Counter)
    excluded: Counter = field(default_factory=Counter)
    duplicates: Counter = field(default_factory=Counter)

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """{"documents"|"empty"|"excluded"|"duplicates": {source: {lang: n}}} for reports and JSON."""
        tables = {"documents": Counter({key: len(docs) for key, docs in self.documents.items()}),
                  "empty": self.empty, "excluded": self.excluded, "duplicates": self.duplicates}
        out: dict[str, dict[str, dict[str, int]]] = {}
        for name, table in tables.items():
            out[name] = {}
            for (source, lang), n in sorted(table.items()):
                if n:
                    out[name].setdefault(source, {})[lang] = n
        return out


def extract(root: Path, sources: list[str], excluded: set[str], lines_per_document: int) -> Extraction:
    """Every source's documents; lines are checked against `excluded` before they are grouped into documents."""
    result = Extraction()
    for source in sources:
        seen: dict[str, set[str]] = {}
        for path, lang in source_files(root, source):
            key = (source, lang)
            docs = result.documents.setdefault(key, [])
            for doc in _documents(path, source, lines_per_document, excluded, key, result):
                if doc in seen.setdefault(lang, set()):
                    result.duplicates[key] += 1
                else:
                    seen[lang].add(doc)
                    docs.append(doc)
    return result


def _documents(path: Path, source: str, lines_per_document: int, excluded: set[str], key: tuple[str, str],
               result: Extraction) -> Iterator[str]:
    kept = []
    for text in units(path, source):
        if not text:
            result.empty[key] += 1
        elif normalise(text) in excluded:
            result.excluded[key] += 1
        else:
            kept.append(text)
    group = 1 if source == "udhr" else lines_per_document  # a UDHR paragraph is a document already
    for start in range(0, len(kept), group):
        yield " ".join(kept[start:start + group])
