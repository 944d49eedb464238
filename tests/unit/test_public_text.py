"""`public_text`: each public data set's layout gives exactly its documents, eval sentences never get through,
and the prepared corpus is cached by inputs, tokenizer and options."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from seqlab.data.store import PreparedCorpus
from seqlab.errors import ConfigError
from seqlab.experiment import compose_config, resource_path, to_run_config
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.data import public_text
from seqlab_plugins.data.public_sources import (LANGS, Extraction, excluded_texts, extract, html_paragraphs, normalise,
                                                read_lines, unquote_csv)
from seqlab_plugins.data.public_text import PublicTextConfig, PublicTextSource, excluded_files

ALL = ["ntrex128", "tico19", "lingua", "udhr"]

UDHR_ENG = """<!doctype html>
<html lang="en">
  <head>
    <title>English title</title>
    <meta charset="utf-8">
  </head>
  <body>
    <h1>Universal &amp; Declaration</h1>
    <p>First&nbsp;para   with
       <b>bold</b> text &lt;ok&gt;</p>
    <ol>
      <li>
        <p>Item one.</p>
      </li>
      <li>Item &#8220;two&#8221;</li>
    </ol>
    <p>A flores DEV sentence.</p>
  </body>
</html>
"""

FILES = {
    "ntrex128/NTREX-128/newstest2019-src.eng.txt": "Hello world.\nThe cat sat.\n\nHello world.\n",
    "ntrex128/NTREX-128/newstest2019-ref.deu.txt": "Hallo Welt.\nDie Katze saß.\n",
    "ntrex128/NTREX-128/newstest2019-ref.zul.txt": "Sawubona.\n",  # not one of the 12 languages
    "ntrex128/README.md": "# NTREX\n",
    "tico19/testsets/en-es_LA/tico19-test.en": "Wash your hands.\nStay home.\n",
    "tico19/testsets/en-es_LA/tico19-test.es_LA": 'Lávate las manos.\n"quoted"   flores devtest LINE.\n',
    "tico19/testsets/en-fr/tico19-test.en": "Wash your hands.\nStay home.\n",
    "tico19/testsets/en-fr/tico19-test.fr": "Lavez-vous les mains.\nRestez chez vous.\n",
    "tico19/testsets/en-ta/tico19-test.en": 'Wash your hands.\n" Use ""masks"" daily. "\n',
    "tico19/testsets/en-ta/tico19-test.ta": "கைகளைக் கழுவுங்கள்.\n",
    "lingua-testdata/language-testdata/sentences/en.txt": "  Ａ   flores DEV\tsentence. \nWeb sentence one.\n",
    "lingua-testdata/language-testdata/sentences/ja.txt": "日本語の文です。\n",
    "lingua-testdata/language-testdata/sentences/zz.txt": "not a language of the study\n",
    "lingua-testdata/language-testdata/single-words/en.txt": "word\n",
    "udhr/declaration/eng.html": UDHR_ENG,
    "udhr/declaration/por_BR.html": "<html><head><title>Português</title></head><body><p>Olá</p></body></html>",
    "udhr/declaration/por_PT.html": "<html><body><p>Olá</p><p>Bom dia</p></body></html>",
    "udhr/declaration/zul.html": "<p>Sawubona</p>",
    "udhr/readme.md": "# udhr\n",
    "flores200/dev/eng.dev": "A FLORES dev sentence.\nAnother dev sentence.\n",
    "flores200/dev/deu.dev": "Ein FLORES Satz.\n",
    "flores200/devtest/eng.devtest": '"""Quoted"" FLORES devtest line."\n',
}

EXPECTED = {
    ("ntrex128", "de"): ["Hallo Welt.", "Die Katze saß."],
    ("ntrex128", "en"): ["Hello world.", "The cat sat."],
    ("tico19", "en"): ["Wash your hands.", "Stay home.", 'Use "masks" daily.'],
    ("tico19", "es"): ["Lávate las manos."],
    ("tico19", "fr"): ["Lavez-vous les mains.", "Restez chez vous."],
    ("tico19", "ta"): ["கைகளைக் கழுவுங்கள்."],
    ("lingua", "en"): ["Web sentence one."],
    ("lingua", "ja"): ["日本語の文です。"],
    ("udhr", "en"): ["Universal & Declaration", "First para with bold text <ok>", "Item one.", "Item “two”"],
    ("udhr", "pt"): ["Olá", "Bom dia"],
}


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(resource_path("tokenizer/embedded.model"))


def _extract(root: Path, exclude: tuple[str, ...] = ("flores200",), lines_per_document: int = 1) -> Extraction:
    return extract(root, ALL, excluded_texts(excluded_files(root, list(exclude))), lines_per_document)


def test_each_source_gives_exactly_its_documents_and_languages(fake_root):
    assert _extract(fake_root).documents == EXPECTED


def test_html_is_stripped_to_paragraphs_without_head():
    paragraphs = html_paragraphs(UDHR_ENG)
    assert paragraphs == ["Universal & Declaration", "First para with bold text <ok>", "Item one.", "Item “two”",
                          "A flores DEV sentence."]
    assert not any("title" in p.lower() for p in paragraphs)
    assert html_paragraphs("<p>never closed <i>here") == ["never closed here"]


def test_eval_sentences_are_excluded_and_counted_and_nothing_else_is_dropped(fake_root):
    counts = _extract(fake_root).counts()
    # lingua's and UDHR's FLORES dev line (other case, spacing, a full-width letter) and TICO's copy of the
    # devtest line the CSV quoting hides.
    assert counts["excluded"] == {"lingua": {"en": 1}, "tico19": {"es": 1}, "udhr": {"en": 1}}
    assert counts["duplicates"] == {"ntrex128": {"en": 1}, "tico19": {"en": 3}, "udhr": {"pt": 1}}
    assert counts["empty"] == {"ntrex128": {"en": 1}}
    assert counts["documents"] == {source: {lang: len(docs) for (s, lang), docs in EXPECTED.items() if s == source}
                                   for source in ALL}


def test_without_exclusion_the_eval_sentences_stay(fake_root):
    docs = _extract(fake_root, exclude=()).documents
    assert docs["lingua", "en"] == ["Ａ   flores DEV\tsentence.", "Web sentence one."]
    assert docs["udhr", "en"][-1] == "A flores DEV sentence."


def test_a_text_file_of_lines_is_excluded_too(fake_root, tmp_path):
    (fake_root / "held_out.txt").write_text("web SENTENCE one.\n", encoding="utf-8")
    (tmp_path / "absolute.txt").write_text("hallo  welt.\n", encoding="utf-8")
    extraction = _extract(fake_root, exclude=("held_out.txt", str(tmp_path / "absolute.txt")))
    assert extraction.documents["lingua", "en"] == ["Ａ   flores DEV\tsentence."]
    assert extraction.documents["ntrex128", "de"] == ["Die Katze saß."]
    assert extraction.counts()["excluded"] == {"lingua": {"en": 1}, "ntrex128": {"de": 1}}


def test_lines_per_document_groups_lines_but_not_paragraphs(fake_root):
    docs = _extract(fake_root, lines_per_document=2).documents
    assert docs["ntrex128", "en"] == ["Hello world. The cat sat.", "Hello world."]
    assert docs["udhr", "en"] == EXPECTED["udhr", "en"]


def test_normalise_and_csv_unquoting():
    assert normalise("  Ａ  B\u00a0c\tD ") == "a b c d"
    assert unquote_csv('"""Panama Papers"" ist"') == '"Panama Papers" ist'
    assert unquote_csv('"Today, there\'s neither."') == '"Today, there\'s neither."'  # a quoted sentence
    assert unquote_csv('"She cried"?""') == '"She cried"?""'  # not a CSV field: a lone quote inside


def test_prepared_dir_builds_one_shard_per_source_and_language(fake_root, tmp_path, tokenizer):
    cfg = PublicTextConfig(name="public_text", root=str(fake_root), prepare_workers=1)
    out = PublicTextSource(cfg).prepared_dir(tokenizer, tmp_path / "cache")
    corpus = PreparedCorpus.open(out)
    assert sorted(shard.name for shard in corpus.shards) == sorted(f"{s}/{lang}" for s, lang in EXPECTED)
    assert {shard.name: shard.n_docs for shard in corpus.shards} == {
        f"{s}/{lang}": len(docs) for (s, lang), docs in EXPECTED.items()}
    text = out.parent / "text"
    assert read_lines(text / "udhr" / "en" / "udhr.txt")[:-1] == EXPECTED["udhr", "en"]
    report = json.loads((out.parent / "extraction.json").read_text(encoding="utf-8"))
    assert report["excluded"] == {"lingua": {"en": 1}, "tico19": {"es": 1}, "udhr": {"en": 1}}
    assert report["duplicates"]["tico19"] == {"en": 3}
    assert out.parent.parent == tmp_path / "cache" / "public_text"


def test_prepared_dir_is_reused_until_an_input_or_option_changes(fake_root, tmp_path, tokenizer, monkeypatch):
    calls = []
    real = public_text.prepare_corpus
    monkeypatch.setattr(public_text, "prepare_corpus", lambda *a, **k: calls.append(a) or real(*a, **k))
    cache = tmp_path / "cache"

    def prepared(**options) -> Path:
        cfg = PublicTextConfig(name="public_text", root=str(fake_root), prepare_workers=1, **options)
        return PublicTextSource(cfg).prepared_dir(tokenizer, cache)

    first = prepared()
    manifest_time = (first / "manifest.json").stat().st_mtime_ns
    assert prepared() == first and len(calls) == 1
    assert (first / "manifest.json").stat().st_mtime_ns == manifest_time
    assert prepared(lines_per_document=2) != first and len(calls) == 2
    assert prepared(sources=["ntrex128", "udhr"]) != first and len(calls) == 3
    assert prepared(exclude=[]) != first and len(calls) == 4
    changed = fake_root / "udhr/declaration/por_PT.html"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert prepared() != first and len(calls) == 5


@pytest.mark.parametrize("change, message", [
    ({"sources": ["ntrex128", "nope"]}, r"^data.sources='nope': unknown source; choose from ntrex128, tico19"),
    ({"exclude": ["nope.txt"]}, r"^data.exclude='nope.txt': neither an eval set \(flores200\) nor a text file"),
    ({"root": "missing"}, r"^data.root='.*missing': no such folder; it must hold .*ntrex128/"),
    ({"lines_per_document": 0}, r"^data.lines_per_document=0: must be >= 1"),
])
def test_bad_config_names_the_field_and_value(fake_root, change, message):
    options = {"root": str(fake_root), **change}
    if change.get("root"):
        options["root"] = str(fake_root.parent / change["root"])
    with pytest.raises(ConfigError, match=message):
        PublicTextConfig(name="public_text", **options)


def test_a_missing_source_folder_names_the_source_and_layout(fake_root):
    (fake_root / "udhr" / "declaration").rename(fake_root / "udhr" / "html")
    with pytest.raises(ConfigError, match=r"^data.sources='udhr': .*udhr/declaration not found; expected the "
                                          r"published layout udhr/declaration/<iso639-3>\[_<variant>\].html"):
        PublicTextConfig(name="public_text", root=str(fake_root))
    PublicTextConfig(name="public_text", root=str(fake_root), sources=["ntrex128"])


def test_a_missing_eval_set_names_the_field(fake_root):
    (fake_root / "flores200" / "devtest").rename(fake_root / "flores200" / "other")
    with pytest.raises(ConfigError, match=r"^data.exclude='flores200': not found under data.root=.*flores200/dev"):
        PublicTextConfig(name="public_text", root=str(fake_root))


@pytest.fixture(scope="module")
def real_extraction(shared_data):
    return _extract(shared_data)


@pytest.mark.shared_data
def test_real_data_has_no_flores_sentence(real_extraction, shared_data):
    flores = [line for path in excluded_files(shared_data, ["flores200"]) for line in read_lines(path) if line]
    assert len(flores) == 12 * (997 + 1012)
    forbidden = {normalise(form) for line in flores for form in (line, unquote_csv(line))}
    leaked = [doc for docs in real_extraction.documents.values() for doc in docs if normalise(doc) in forbidden]
    assert leaked == []


@pytest.mark.shared_data
def test_real_data_covers_every_language(real_extraction):
    langs = {lang for (_, lang), docs in real_extraction.documents.items() if docs}
    assert langs == set(LANGS)
    for source in ALL:
        assert {lang for (s, lang) in real_extraction.documents if s == source} <= set(LANGS)


@pytest.mark.shared_data
def test_real_udhr_and_tico_text_is_clean(real_extraction):
    udhr = [doc for (s, _), docs in real_extraction.documents.items() if s == "udhr" for doc in docs]
    assert len(udhr) > 12 * 80 and not any("<" in doc or ">" in doc or "\n" in doc for doc in udhr)
    assert len(real_extraction.documents["udhr", "pt"]) > len(real_extraction.documents["udhr", "en"])  # BR and PT
    tico = [doc for (s, _), docs in real_extraction.documents.items() if s == "tico19" for doc in docs]
    assert all(unquote_csv(doc) == doc for doc in tico)
    # TICO pairs the same English with 7 languages: all but about one copy are duplicates.
    assert real_extraction.duplicates["tico19", "en"] > 6 * 2000
    assert 2100 <= len(real_extraction.documents["tico19", "en"]) < 2200


def test_the_study_data_config_reads_its_root_from_the_eval_data_variable(fake_root, monkeypatch):
    monkeypatch.setenv("SEQLAB_EVAL_DATA", str(fake_root))
    data = to_run_config(compose_config(["data=study"])).data
    assert isinstance(data, PublicTextConfig) and data.root == str(fake_root) and data.exclude == ["flores200"]
    monkeypatch.delenv("SEQLAB_EVAL_DATA")
    with pytest.raises(ConfigError, match=r"data.root is required but not set"):
        to_run_config(compose_config(["data=study"]))
