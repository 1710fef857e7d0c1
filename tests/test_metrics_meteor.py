"""NLTK METEOR with WordNet found on the system (no download), and the WordNet search itself."""

import gzip
import re
from pathlib import Path

import pytest

from keras_captioning.errors import CaptioningError
from keras_captioning.metrics import Meteor, WordNetNotFoundError, load_wordnet, sentence_meteor
from keras_captioning.metrics.wordnet import LEXNAME_CATEGORIES, LEXNAMES, find_wordnet, lexnames_text

MAN_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")
SYSTEM_WORDNET = "/usr/share/wordnet"


@pytest.fixture(scope="module")
def wordnet(tmp_path_factory):
    # One cache folder for the whole session (getbasetemp), so WordNet is loaded only once.
    try:
        return load_wordnet(cache_dir=str(tmp_path_factory.getbasetemp() / "kc_nltk_data"))
    except WordNetNotFoundError as error:
        pytest.skip(f"no WordNet here: {error}")


def test_lexnames_table():
    lines = lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[44] == "44\tadj.ppl\t3"
    for _number, name, category in LEXNAMES:
        assert category == LEXNAME_CATEGORIES[name.split(".")[0]]


@pytest.mark.skipif(not MAN_PAGE.exists(), reason="lexnames(5WN) man page not installed (Debian wordnet-base)")
def test_lexnames_match_the_man_page():
    text = gzip.open(MAN_PAGE, "rt", encoding="utf-8", errors="replace").read()
    rows = re.findall(r"^(\d\d)\t(\S+)", text, flags=re.MULTILINE)  # the tbl table: number, name, contents
    assert [(int(n), name) for n, name in rows] == [(n, name) for n, name, _ in LEXNAMES]


def test_missing_wordnet_gives_one_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WordNetNotFoundError) as info:
        load_wordnet(nltk_paths=[str(empty)], system_dirs=[str(empty)], cache_dir=str(tmp_path / "cache"))
    message = str(info.value)
    assert "\n" not in message
    assert "python -m nltk.downloader wordnet" in message
    assert "apt-get install wordnet-base wordnet-sense-index" in message
    assert isinstance(info.value, CaptioningError)


def test_reader_loads_and_is_cached(wordnet, tmp_path_factory):
    assert wordnet.get_version() == "3.0"
    assert wordnet.synset("dog.n.01").lexname() == "noun.animal"
    again = load_wordnet(cache_dir=str(tmp_path_factory.getbasetemp() / "kc_nltk_data"))
    assert again is wordnet  # cached per root


@pytest.mark.skipif(not Path(SYSTEM_WORDNET, "data.noun").exists(), reason="no system WordNet in /usr/share/wordnet")
def test_system_wordnet_is_assembled_into_an_nltk_folder(tmp_path):
    empty = tmp_path / "no_nltk_data"
    empty.mkdir()
    root = find_wordnet(nltk_paths=[str(empty)], system_dirs=[SYSTEM_WORDNET], cache_dir=str(tmp_path / "cache"))
    root = Path(str(root))
    assert root == tmp_path / "cache" / "corpora" / "wordnet"
    assert (root / "lexnames").read_text() == lexnames_text()
    assert (root / "data.noun").stat().st_size == Path(SYSTEM_WORDNET, "data.noun").stat().st_size
    assert not (root / "data.noun").is_symlink()  # NLTK refuses files resolving outside the root
    stamp = (root / "lexnames").stat().st_mtime_ns
    find_wordnet(nltk_paths=[str(empty)], system_dirs=[SYSTEM_WORDNET], cache_dir=str(tmp_path / "cache"))
    assert (root / "lexnames").stat().st_mtime_ns == stamp  # re-used, not rebuilt


def test_identical_caption_scores_close_to_one(wordnet):
    # 5 matches in 1 chunk: penalty 0.5 * (1/5)**3 = 0.004
    assert sentence_meteor(["A man riding a wave."], "a man riding a wave", wordnet=wordnet) == pytest.approx(0.996)


def test_synonyms_and_stems_match_through_wordnet(wordnet):
    # "couch" has the lemma "sofa" in WordNet: 5 of 5 words match in one chunk
    assert sentence_meteor("a dog on a sofa", "a dog on a couch", wordnet=wordnet) == pytest.approx(0.996)
    # NLTK quirk (documented): the synonym stage sees Porter stems, "large" -> "larg" has none
    assert sentence_meteor("a big dog", "a large dog", wordnet=wordnet) == pytest.approx(1 / 3)
    # Porter stems: dogs/dog, running/run
    assert sentence_meteor("dog run", "dogs running", wordnet=wordnet) == pytest.approx(1 - 0.5 / 8)
    # "sprints" has no WordNet lemma "runs" (and no common stem): 2 of 3 words match
    assert sentence_meteor("a dog runs", "a dog sprints", wordnet=wordnet) == pytest.approx(0.625)


def test_best_reference_and_corpus_mean(wordnet):
    metric = Meteor(wordnet=wordnet)
    gts = {1: ["a cat on a mat", "a man riding a wave"], 2: ["two dogs play"]}
    res = {1: ["a man riding a wave"], 2: [""]}
    corpus, per_image = metric.compute_score(gts, res)
    assert per_image == pytest.approx([0.996, 0.0])
    assert corpus == pytest.approx(0.498)


def test_meteor_is_finite_on_odd_inputs(wordnet):
    gts = {1: ["!!!"], 2: ["a dog"], 3: ["caf\u00e9 \U0001F355"]}
    res = {1: ["a dog"], 2: ["dog"], 3: ["\U0001F355 caf\u00e9"]}
    corpus, per_image = Meteor(wordnet=wordnet).compute_score(gts, res)
    assert per_image[0] == 0.0 and 0 < per_image[1] < 1 and per_image[2] == pytest.approx(0.5)


@pytest.mark.skipif(not Path(SYSTEM_WORDNET, "data.noun").exists(), reason="no system WordNet in /usr/share/wordnet")
def test_unwritable_cache_falls_back_to_a_temporary_folder(tmp_path, monkeypatch, caplog):
    import keras_captioning.metrics.wordnet as wordnet_module

    monkeypatch.setattr(wordnet_module, "_fallback_dir", tmp_path / "fallback")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    empty = tmp_path / "no_nltk_data"
    empty.mkdir()
    root = find_wordnet(nltk_paths=[str(empty)], system_dirs=[SYSTEM_WORDNET], cache_dir=str(not_a_dir))
    assert Path(str(root)) == tmp_path / "fallback" / "corpora" / "wordnet"
    assert "assembling WordNet in" in caplog.text
