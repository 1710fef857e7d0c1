"""The shared PTB-like tokenizer, and its agreement with the real Stanford one when Java exists."""

import importlib.util
import os
import shutil

import pytest

from keras_captioning.errors import CaptioningError
from keras_captioning.metrics import PTB_PUNCTUATION, get_tokenizer, tokenize_ptb, tokenize_whitespace


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("A man riding a wave on top of a surfboard.", "a man riding a wave on top of a surfboard"),
        ("A man's dog, running (fast)!", "a man 's dog running -lrb- fast -rrb-"),
        ("There's a cat that isn't sleeping.", "there 's a cat that is n't sleeping"),
        ("I can't believe it won't fit", "i ca n't believe it wo n't fit"),
        ('A sign reads "No parking".', "a sign reads no parking"),
        ("A black-and-white photo -- of a train...", "a black-and-white photo of a train"),
        ("It's 10:30; 3.5 inch, 1,000 pixels", "it 's 10:30 3.5 inch 1,000 pixels"),
        ("Some fruit?! Yes.. ok!!", "some fruit ?! yes ok !!"),
        ("A  man \n riding\ta\u200bbike\u2028now", "a man riding a bike now"),
        ("An emoji \U0001F355 pizza \u2764\ufe0f", "an emoji pizza \u2764"),
        ("Caf\u00e9 na\u00efve", "caf\u00e9 na\u00efve"),
        ("", ""),
        ("... !? -- ,", "!?"),
    ],
)
def test_tokenize_ptb_examples(text, tokens):
    assert tokenize_ptb(text) == tokens.split()


def test_punctuation_list_is_pycocoevalcaps():
    assert PTB_PUNCTUATION == {
        "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"
    }


def test_whitespace_tokenizer_only_splits():
    assert tokenize_whitespace("  A Dog,  runs ") == ["A", "Dog,", "runs"]


def test_get_tokenizer():
    assert get_tokenizer("ptb") is tokenize_ptb
    assert get_tokenizer("whitespace") is tokenize_whitespace
    custom = str.split
    assert get_tokenizer(custom) is custom
    with pytest.raises(CaptioningError, match="tokenizer: unknown value 'spacy'"):
        get_tokenizer("spacy")


# Ordinary captions on which our pure-Python tokenizer and the Stanford jar agree exactly.
ORDINARY_CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs, playing in the snow!",
    "A woman's purse on a table.",
    "There's a cat that isn't sleeping.",
    "A plate of food (with broccoli) and rice.",
    '"Stop" sign at the corner.',
    "A black-and-white photo of a train.",
    "Kids play soccer; parents watch.",
    "What is this? A giraffe...",
    "A man -- wearing a hat -- smiles",
    "It's 10:30 and the clock says so.",
    "A 3.5 inch screen, 1,000 pixels.",
    "Don't touch the dog's bowl!",
    "The cat's toys aren't here: they're gone.",
    "A bus at St. Mary's station",
    "A  man \n riding\ta bike",
    "people watching a game of 'baseball'",
    "Children's books on a shelf",
    "A group of people [standing] near a {bus}",
    "a dog , sitting on a couch .",
    "I can't believe it won't fit",
    "A couple of 100% cotton shirts",
    "It is a 'fine' day.",
    "Kitchen with a stove & an oven",
    'A sign reads "No parking".',
    "The U.S. flag waves.",
    "A MAN IN A RED SHIRT",
    "An emoji \U0001F355 pizza",
    "A dog... running!!",
    "Some fruit?! Yes.",
]


@pytest.mark.skipif(shutil.which("java") is None, reason="no java on PATH (the Stanford tokenizer is a jar)")
@pytest.mark.skipif(importlib.util.find_spec("pycocoevalcap") is None, reason="pycocoevalcap is not installed")
def test_agrees_with_stanford_ptb_tokenizer_on_ordinary_captions():
    from pycocoevalcap.tokenizer import ptbtokenizer
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if not os.access(os.path.dirname(ptbtokenizer.__file__), os.W_OK):
        pytest.skip("pycocoevalcap's PTBTokenizer writes a temporary file next to its jar")

    official = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(ORDINARY_CAPTIONS)})
    for i, caption in enumerate(ORDINARY_CAPTIONS):
        assert " ".join(tokenize_ptb(caption)) == official[i][0], caption


def test_fast_word_tokenizer_equals_nltks():
    from nltk.tokenize import NLTKWordTokenizer

    from keras_captioning.metrics.tokenizer import _WORD_TOKENIZER

    assert type(_WORD_TOKENIZER) is not NLTKWordTokenizer  # the stdlib-re copy compiled
    reference = NLTKWordTokenizer()
    extra = ["\u201cquoted\u201d \u2014 dash", "'90s rock'n'roll", "gonna wanna gimme cannot", "a*b <c> [d] {e}",
             "'tis 'twas", "end.", "$3.88 (roughly 3,36 euros)", "x -- y --- z", "«guillemets» ‘single’"]
    for text in ORDINARY_CAPTIONS + extra:
        text = text.lower()
        assert _WORD_TOKENIZER.tokenize(text, convert_parentheses=True) == reference.tokenize(
            text, convert_parentheses=True
        ), text
