"""Finding WordNet 3.0 for NLTK's METEOR without downloading anything.

Search order (:func:`find_wordnet`):

1. NLTK's own data: ``nltk.data.find("corpora/wordnet")`` over ``nltk.data.path`` (this also
   finds ``corpora/wordnet.zip``), i.e. what ``python -m nltk.downloader wordnet`` installs.
2. A system WordNet 3.0 database: ``$WNSEARCHDIR`` if set, then ``/usr/share/wordnet``
   (Debian/Ubuntu packages ``wordnet-base`` + ``wordnet-sense-index``), then
   ``/usr/local/WordNet-3.0/dict``, ``/usr/share/WordNet-3.0/dict`` and
   ``/opt/homebrew/share/wordnet``/``/usr/local/share/wordnet``. A directory qualifies when it
   holds ``index.*``/``data.*``/``*.exc`` for the four parts of speech.

NLTK's ``WordNetCorpusReader`` also opens a ``lexnames`` file, which the Debian packages do not
ship. It is the fixed 45-line table of lexicographer files documented in the ``lexnames(5WN)``
manual page (``zcat /usr/share/man/man5/lexnames.5WN.gz``; installed by ``wordnet-base``), one
line ``NN<TAB>name<TAB>category`` each, where category is 1 noun, 2 verb, 3 adjective, 4 adverb.
The man page's table gives number, name and a description; the category follows from the
name's prefix. :data:`LEXNAMES` embeds it (a test cross-checks it against the man page).

When the system directory has no ``lexnames``, an NLTK-style corpus folder is assembled in
``$KERAS_CAPTIONING_NLTK_DATA/corpora/wordnet`` (default
``~/.cache/keras_captioning/nltk_data/corpora/wordnet``; one temporary directory per process
when that is not writable): copies of the system files plus the generated ``lexnames``. Copies,
not symlinks, because NLTK >= 3.9 refuses corpus files that resolve outside the corpus root;
about 45 MB, made once and re-used while the source files keep their sizes. That
``nltk_data`` directory is appended to ``nltk.data.path``, because NLTK >= 3.9 reads corpora
only below its data path (NLTK's own ``nltk.corpus.wordnet`` then finds it too). The optional
``index.sense`` and ``cntlist.rev`` are copied when present (METEOR does not use them); the
multilingual ``omw`` data is not needed.

When nothing is found, :class:`WordNetNotFoundError` says how to install it.
"""

import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from keras_captioning.metrics.errors import WordNetNotFoundError

logger = logging.getLogger(__name__)

ENV_NLTK_DATA = "KERAS_CAPTIONING_NLTK_DATA"

#: The 45 WordNet 3.0 lexicographer files: (number, name, syntactic category 1-4), lexnames(5WN).
LEXNAMES = (
    (0, "adj.all", 3), (1, "adj.pert", 3), (2, "adv.all", 4), (3, "noun.Tops", 1),
    (4, "noun.act", 1), (5, "noun.animal", 1), (6, "noun.artifact", 1), (7, "noun.attribute", 1),
    (8, "noun.body", 1), (9, "noun.cognition", 1), (10, "noun.communication", 1),
    (11, "noun.event", 1), (12, "noun.feeling", 1), (13, "noun.food", 1), (14, "noun.group", 1),
    (15, "noun.location", 1), (16, "noun.motive", 1), (17, "noun.object", 1),
    (18, "noun.person", 1), (19, "noun.phenomenon", 1), (20, "noun.plant", 1),
    (21, "noun.possession", 1), (22, "noun.process", 1), (23, "noun.quantity", 1),
    (24, "noun.relation", 1), (25, "noun.shape", 1), (26, "noun.state", 1),
    (27, "noun.substance", 1), (28, "noun.time", 1), (29, "verb.body", 2), (30, "verb.change", 2),
    (31, "verb.cognition", 2), (32, "verb.communication", 2), (33, "verb.competition", 2),
    (34, "verb.consumption", 2), (35, "verb.contact", 2), (36, "verb.creation", 2),
    (37, "verb.emotion", 2), (38, "verb.motion", 2), (39, "verb.perception", 2),
    (40, "verb.possession", 2), (41, "verb.social", 2), (42, "verb.stative", 2),
    (43, "verb.weather", 2), (44, "adj.ppl", 3),
)

#: Category numbers of lexnames(5WN): the prefix of a lexicographer file's name decides it.
LEXNAME_CATEGORIES = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

_POS = ("adj", "adv", "noun", "verb")
#: Files NLTK's reader needs for synset look-ups (METEOR's use).
REQUIRED_FILES = tuple(f"{kind}.{pos}" for kind in ("index", "data") for pos in _POS) + tuple(
    f"{pos}.exc" for pos in _POS
)
#: Files NLTK's reader lists but opens only for sense keys and lemma counts.
OPTIONAL_FILES = ("index.sense", "cntlist.rev")

SYSTEM_WORDNET_DIRS = (
    "/usr/share/wordnet",
    "/usr/local/WordNet-3.0/dict",
    "/usr/share/WordNet-3.0/dict",
    "/usr/local/share/wordnet",
    "/opt/homebrew/share/wordnet",
)

_SOURCE_MARKER = "KERAS_CAPTIONING_SOURCE"
_INSTALL_HINT = "run `python -m nltk.downloader wordnet` or `apt-get install wordnet-base wordnet-sense-index`"


class _EnglishWordNetReader(WordNetCorpusReader):
    """NLTK's reader without its WordNet-3.0 synset map, which only multilingual look-ups use.

    NLTK >= 3.9 builds that map in ``__init__`` by comparing the version read from the files
    ("3.0") with the corpus name ("wordnet"), which never match, so it reads ``index.sense``
    twice: about half of the reader's load time (3.4 s -> 1.5 s here). METEOR looks up
    English synsets only, and this reader has no multilingual data (``omw_reader=None``).
    """

    def map_wn(self, version="wordnet"):
        return None


_readers: dict[str, WordNetCorpusReader] = {}
_fallback_dir: Path | None = None
_lock = threading.Lock()


def lexnames_text() -> str:
    """The 45-line ``lexnames`` file of WordNet 3.0 (``"00\\tadj.all\\t3\\n"`` ...)."""
    return "".join(f"{number:02d}\t{name}\t{category}\n" for number, name, category in LEXNAMES)


def default_cache_dir() -> Path:
    """``$KERAS_CAPTIONING_NLTK_DATA`` or ``$XDG_CACHE_HOME``/``~/.cache`` + ``keras_captioning/nltk_data``."""
    if os.environ.get(ENV_NLTK_DATA):
        return Path(os.environ[ENV_NLTK_DATA]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache_home) / "keras_captioning" / "nltk_data"


def default_system_dirs() -> list:
    """``$WNSEARCHDIR`` (if set) followed by :data:`SYSTEM_WORDNET_DIRS`."""
    dirs = [os.environ["WNSEARCHDIR"]] if os.environ.get("WNSEARCHDIR") else []
    return dirs + list(SYSTEM_WORDNET_DIRS)


def _is_wordnet_dir(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED_FILES)


def _find_nltk_data(paths: Sequence[str] | None):
    try:
        return nltk.data.find("corpora/wordnet", paths=None if paths is None else list(paths))
    except (LookupError, OSError, ValueError) as error:  # OSError: NLTK's path sandbox refusals
        logger.debug("no NLTK WordNet data: %s", " ".join(str(error).split())[:200])
        return None


def _assembled_is_current(target: Path, source: Path) -> bool:
    try:
        same_source = (target / _SOURCE_MARKER).read_text(encoding="utf-8").strip() == str(source)
        same_files = all(
            (target / name).stat().st_size == (source / name).stat().st_size
            for name in REQUIRED_FILES
        )
    except OSError:
        return False
    return same_source and same_files and (target / "lexnames").is_file()


def _allow_nltk_root(directory: Path) -> None:
    # NLTK >= 3.9 opens corpus files only below a directory of nltk.data.path (its path
    # sandbox), and refuses symlinks leaving the corpus root; hence copies, and this entry.
    entry = str(directory)
    if entry not in nltk.data.path:
        nltk.data.path.append(entry)


def assemble_wordnet_dir(source: Path, cache_dir: Path) -> Path:
    """Builds ``cache_dir/corpora/wordnet`` from a system WordNet dir (copies + ``lexnames``).

    Copies (about 45 MB), not symlinks: NLTK refuses corpus files that resolve outside the
    corpus root. Re-uses an existing folder made from the same ``source``. The folder is
    built next to its final place and renamed into it, so concurrent processes never see
    half a folder.
    """
    source = Path(source).resolve()
    target = Path(cache_dir) / "corpora" / "wordnet"
    if _assembled_is_current(target, source):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; NLTK wants no group/world write
        for name in REQUIRED_FILES + OPTIONAL_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)
        (staging / "lexnames").write_text(lexnames_text(), encoding="utf-8")
        (staging / _SOURCE_MARKER).write_text(str(source) + "\n", encoding="utf-8")
        for path in staging.iterdir():
            os.chmod(path, 0o644)  # NLTK refuses group- or world-writable files (umask 002)
        if target.exists() or target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:
            if not _assembled_is_current(target, source):  # another process won the race?
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("assembled an NLTK WordNet folder at %s from %s", target, source)
    return target


def _fallback_cache_dir() -> Path:
    """One temporary cache per process, so a read-only home does not mean a copy per call."""
    global _fallback_dir
    if _fallback_dir is None:
        _fallback_dir = Path(tempfile.mkdtemp(prefix="keras_captioning_nltk_data-"))
    return _fallback_dir


def find_wordnet(
    nltk_paths: Sequence[str] | None = None,
    system_dirs: Sequence[str] | None = None,
    cache_dir: str | None = None,
):
    """Returns the root NLTK's ``WordNetCorpusReader`` should read (a path or NLTK path pointer).

    Args:
        nltk_paths: NLTK data directories to search (default ``nltk.data.path``).
        system_dirs: WordNet database directories (default :func:`default_system_dirs`).
        cache_dir: where to assemble an NLTK folder for a system database that has no
            ``lexnames`` (default :func:`default_cache_dir`).

    Raises:
        WordNetNotFoundError: neither NLTK data nor a system WordNet exists (one-line message).
    """
    found = _find_nltk_data(nltk_paths)
    if found is not None:
        return found
    searched = default_system_dirs() if system_dirs is None else list(system_dirs)
    for directory in searched:
        path = Path(directory)
        if not _is_wordnet_dir(path):
            continue
        if (path / "lexnames").is_file():
            _allow_nltk_root(path)
            return path
        base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        try:
            root = assemble_wordnet_dir(path, base)
        except OSError as error:
            fallback = _fallback_cache_dir()
            logger.warning("cannot write %s (%s); assembling WordNet in %s", base, error, fallback)
            base = fallback
            root = assemble_wordnet_dir(path, base)
        _allow_nltk_root(base.resolve())
        return root
    nltk_searched = list(nltk.data.path) if nltk_paths is None else list(nltk_paths)
    raise WordNetNotFoundError(
        "WordNet not found (needed by METEOR; searched NLTK data in "
        f"{os.pathsep.join(map(str, nltk_searched)) or '(none)'} and system dirs "
        f"{os.pathsep.join(map(str, searched)) or '(none)'}): {_INSTALL_HINT}"
    )


def load_wordnet(
    nltk_paths: Sequence[str] | None = None,
    system_dirs: Sequence[str] | None = None,
    cache_dir: str | None = None,
) -> WordNetCorpusReader:
    """A ``WordNetCorpusReader`` for the WordNet :func:`find_wordnet` finds (cached per root).

    Loading the lemma index takes a few seconds the first time; later calls are free.

    Raises:
        WordNetNotFoundError: see :func:`find_wordnet`.
    """
    root = find_wordnet(nltk_paths=nltk_paths, system_dirs=system_dirs, cache_dir=cache_dir)
    key = str(root)
    with _lock:
        reader = _readers.get(key)
        if reader is None:
            try:
                with warnings.catch_warnings():
                    # No Open Multilingual Wordnet is wanted: English synonyms only.
                    warnings.simplefilter("ignore", UserWarning)
                    reader = _EnglishWordNetReader(key if isinstance(root, Path) else root, None)
            except (OSError, ValueError, AssertionError) as error:  # unreadable / refused / corrupt
                reason = " ".join(str(error).split())[:300]
                raise WordNetNotFoundError(f"WordNet at {key} cannot be read ({reason}): {_INSTALL_HINT}") from error
            _readers[key] = reader
            logger.info("loaded WordNet %s from %s", reader.get_version(), key)
    return reader
