"""The one tokenizer every metric shares: a pure-Python approximation of the COCO scorer's.

The official COCO caption scorer (pycocoevalcap) tokenizes every caption with Stanford
CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` (a Java program) and then, in
Python, drops the tokens listed in :data:`PTB_PUNCTUATION`. Every metric then splits the
result on spaces. :func:`tokenize_ptb` approximates that pipeline without Java:

1. characters Stanford deletes as "untokenizable" are deleted: everything outside the Basic
   Multilingual Plane (emoji such as U+1F355) and variation selectors (U+FE00..U+FE0F);
   control, format and separator characters (newline, tab, zero-width space, U+2028, ...)
   become spaces;
2. the text is lower-cased;
3. NLTK's ``NLTKWordTokenizer`` (its patterns run by the stdlib ``re``, see
   :func:`_make_word_tokenizer`; the Penn Treebank rules: clitics split off as in
   ``man 's``, ``is n't``, ``ca n't``; punctuation split off; double quotes become `` and '';
   brackets -> ``-LRB-`` ...) splits it, and the tokens are lower-cased again, so brackets
   become ``-lrb-``/``-rrb-``/``-lsb-``/... exactly as Stanford's ``-lowerCase`` output.
   pycocoevalcap's list names them in upper case (``-LRB-``), so the official pipeline keeps
   them as words; so do we;
4. tokens in :data:`PTB_PUNCTUATION` are removed, and so are runs of dots (``..``,
   ``....``), which Stanford splits into removed ``.`` tokens or rewrites as ``...``. Runs
   of ``!``/``?`` (``!!``, ``?!``) stay one kept token, as in Stanford.

Known differences from the Java pipeline (all rare in captions): Stanford splits ``w/`` into
``w /``, keeps ``<bus>`` whole and splits ``rock'n'roll`` into ``rock 'n' roll`` (NLTK:
``w/``, ``< bus >``, ``rock'n'roll``); a sentence-final abbreviation keeps its period in
Stanford (``u.s.``) but not here (``u.s``); Stanford rewrites ``½`` as ``1/2`` and splits
``20°c`` into ``20 ° c``; NLTK splits a leading apostrophe off ``'90s``. On ordinary captions
(letters, digits, ``.,;:!?'"()-``, clitics, quotes) the two agree token for token; a test
checks 30-odd such captions against the real jar when Java is available.

``"whitespace"`` is :meth:`str.split` and nothing else (no lower-casing): use it for captions
that are already tokenized, e.g. the output of the official PTBTokenizer.
"""

import re
import unicodedata
from collections.abc import Callable

from nltk.tokenize import NLTKWordTokenizer

from keras_captioning.metrics.errors import MetricInputError

#: The tokens pycocoevalcap's ``PTBTokenizer`` removes after Stanford tokenization (its list).
PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
     ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

Tokenizer = Callable[[str], list[str]]
TokenizerSpec = str | Tokenizer

_DOTS_ONLY = re.compile(r"^\.{2,}$")
# Stanford keeps a run like "!!" or "?!" as one (kept) token; NLTK would split it into
# removable "!" "?" tokens, so runs are swapped for a placeholder around NLTK and restored.
_BANG_QUESTION_RUN = re.compile(r"[!?]{2,}")
_PLACEHOLDER = "\ue000"  # a private-use character: _clean_characters removed any real one
_ASCII_CONTROLS_TO_SPACE = {code: " " for code in list(range(32)) + [127]}
_RE_FLAGS = re.IGNORECASE | re.MULTILINE | re.DOTALL | re.UNICODE | re.VERBOSE


def _make_word_tokenizer() -> NLTKWordTokenizer:
    """NLTK's ``NLTKWordTokenizer`` with its patterns compiled by the stdlib ``re``.

    Same patterns, same substitutions, same ``tokenize`` method; about 10x faster, because
    NLTK >= 3.9 runs each of its ~30 substitutions through the ``regex`` module under a ReDoS
    timeout (300 us per caption). Falls back to NLTK's own tokenizer if a pattern does not
    compile with ``re`` (a test checks both give the same tokens).
    """
    base = NLTKWordTokenizer

    def stdlib(pattern):
        return re.compile(pattern.pattern, pattern.flags & _RE_FLAGS)

    try:
        attributes = {
            name: [(stdlib(p), repl) for p, repl in getattr(base, name)]
            for name in ("STARTING_QUOTES", "PUNCTUATION", "ENDING_QUOTES", "CONVERT_PARENTHESES")
        }
        for name in ("PARENS_BRACKETS", "DOUBLE_DASHES"):
            pattern, repl = getattr(base, name)
            attributes[name] = (stdlib(pattern), repl)
    except (AttributeError, TypeError, ValueError, re.error):
        return base()
    return type("StdlibNLTKWordTokenizer", (base,), attributes)()


_WORD_TOKENIZER = _make_word_tokenizer()


def _clean_characters(text: str) -> str:
    """Drop Stanford's untokenizable characters; turn control/format/separators into spaces."""
    if text.isascii():  # the common case: only control characters need a look
        return text.translate(_ASCII_CONTROLS_TO_SPACE)
    out = []
    for ch in text:
        code = ord(ch)
        if code > 0xFFFF or 0xFE00 <= code <= 0xFE0F:
            continue  # Stanford deletes these (Java surrogate pairs, variation selectors)
        category = unicodedata.category(ch)
        if category[0] in ("C", "Z"):
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def tokenize_ptb(text: str) -> list[str]:
    """PTB-like tokens of one caption: lower-cased, punctuation removed (see module docstring).

    Example: ``"A man's dog, running (fast)!"`` -> ``["a", "man", "'s", "dog", "running",
    "-lrb-", "fast", "-rrb-"]``.
    """
    text = _clean_characters(text).lower()
    runs = iter(_BANG_QUESTION_RUN.findall(text))
    text = _BANG_QUESTION_RUN.sub(f" {_PLACEHOLDER} ", text)
    tokens = []
    for token in _WORD_TOKENIZER.tokenize(text, convert_parentheses=True):
        while _PLACEHOLDER in token:
            token = token.replace(_PLACEHOLDER, next(runs), 1)
        # Lower-case *before* the list check, as Stanford's -lowerCase output meets the list
        # in pycocoevalcap: "-lrb-" is not "-LRB-" and survives there, so it survives here.
        token = token.lower()
        if token not in PTB_PUNCTUATION and not _DOTS_ONLY.match(token):
            tokens.append(token)
    return tokens


def tokenize_whitespace(text: str) -> list[str]:
    """``text.split()``: for captions that are already tokenized (no lower-casing)."""
    return text.split()


_TOKENIZERS = {"ptb": tokenize_ptb, "whitespace": tokenize_whitespace}


def get_tokenizer(tokenizer: TokenizerSpec = "ptb") -> Tokenizer:
    """Resolves ``"ptb"`` | ``"whitespace"`` | a callable ``str -> list[str]`` to a callable."""
    if callable(tokenizer):
        return tokenizer
    if isinstance(tokenizer, str) and tokenizer in _TOKENIZERS:
        return _TOKENIZERS[tokenizer]
    raise MetricInputError(
        f"tokenizer: unknown value {tokenizer!r}; use 'ptb', 'whitespace' or a callable str -> list[str]"
    )
