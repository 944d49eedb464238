"""`CorpusReport`: what reading and tokenizing a corpus found, counted exactly and merged across workers."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from seqlab.errors import DataError

MAX_NOTES = 20
# Report fields that count input left out of the corpus, in the order the summary lists them.
_SKIP_COUNTS = ("skipped_files", "empty_files", "binary_files", "unreadable_files", "corrupt_files",
                "invalid_utf8_lines", "nul_lines", "blank_lines", "bad_json_lines", "bad_records", "long_records",
                "empty_after_tokenization")


@dataclass
class CorpusReport:
    """What reading (and then tokenizing) a corpus found. Counts add up across files and parallel workers.

    `files` counts files that were opened as corpus files; `empty_files`, `binary_files` and
    `unreadable_files` are those of them that gave nothing. `skipped_files` are files in a folder with an
    unsupported extension or an invalid language folder name; they are not opened. `corrupt_files` are
    compressed or columnar files damaged part way: what came before the damage was read. `bad_records` are parquet
    or Arrow rows whose text is not a string or whose language is not a valid code. Line counts are of skipped
    lines: `blank_lines` includes JSONL records whose text is blank, `nul_lines` JSONL records whose text holds
    a NUL character, and `long_records` are JSONL records too long to parse. `split_lines` counts text lines cut
    into several documents, which all arrive (see `seqlab.data.corpus`). `documents` and `characters` are what was yielded;
    `empty_after_tokenization` of those documents encoded to no token and were not stored. Of the rest,
    `contaminated_*` were removed for sharing an n-gram with an evaluation set and `duplicate_*` as exact
    duplicates of an earlier document (see `seqlab.data.filters`).
    """

    files: int = 0
    skipped_files: int = 0
    empty_files: int = 0
    binary_files: int = 0
    unreadable_files: int = 0
    corrupt_files: int = 0
    invalid_utf8_lines: int = 0
    nul_lines: int = 0
    blank_lines: int = 0
    bad_json_lines: int = 0
    bad_records: int = 0
    long_records: int = 0
    split_lines: int = 0
    documents: int = 0
    characters: int = 0
    empty_after_tokenization: int = 0
    duplicate_documents: int = 0
    duplicate_tokens: int = 0
    contaminated_documents: int = 0
    contaminated_tokens: int = 0
    notes: list[str] = field(default_factory=list)
    notes_omitted: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "notes" and (type(value) is not int or value < 0):
                raise DataError(f"CorpusReport.{f.name}={value!r} must be a non-negative integer")

    def note(self, message: str) -> None:
        """Describe one problem; past MAX_NOTES only count it, so a corpus of broken lines stays readable."""
        if len(self.notes) < MAX_NOTES:
            # A file name that is not UTF-8 reaches Python as lone surrogates, which no UTF-8 writer (the
            # report, the manifest, the terminal) accepts: show its raw bytes as \xNN instead.
            self.notes.append(message.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
        else:
            self.notes_omitted += 1

    def merge(self, other: CorpusReport) -> None:
        """Add `other`'s counts and notes to this report (merge in file order for a deterministic result)."""
        for f in fields(self):
            if f.name != "notes":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        room = MAX_NOTES - len(self.notes)
        self.notes.extend(other.notes[:room])
        self.notes_omitted += max(0, len(other.notes) - room)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorpusReport:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"corpus report has unknown fields {unknown}; known: {sorted(known)}")
        return cls(**{**data, "notes": list(data.get("notes", []))})

    def summary(self) -> str:
        """A few lines for the terminal: what was read, what was skipped and why, the first problems."""
        lines = [f"read {self.documents:,} documents ({self.characters:,} characters) from {self.files:,} files"]
        skipped = [f"{name}={getattr(self, name):,}" for name in _SKIP_COUNTS if getattr(self, name)]
        if skipped:
            lines.append("skipped: " + ", ".join(skipped))
        if self.split_lines:
            lines.append(f"split: split_lines={self.split_lines:,} (lines longer than max_document_bytes)")
        removed = [f"{what}={getattr(self, what + '_documents'):,} documents "
                   f"({getattr(self, what + '_tokens'):,} tokens)"
                   for what in ("contaminated", "duplicate") if getattr(self, what + "_documents")]
        if removed:
            lines.append("removed: " + ", ".join(removed))
        if self.notes:
            lines.append("problems:")
            lines += [f"  {note}" for note in self.notes]
            if self.notes_omitted:
                lines.append(f"  ... and {self.notes_omitted:,} more")
        return "\n".join(lines)
