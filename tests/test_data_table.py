"""The caption table loader (``data.format: table``): layouts, column mapping, splits, and one
test per malformed case, each ending in a logged skip or one clear error line."""

import json
import logging

import pytest

from keras_captioning.config import from_dict, load_config
from keras_captioning.data import load_dataset, load_table
from keras_captioning.data.records import UNSPLIT, collect_skips
from keras_captioning.errors import CaptioningError
from keras_captioning.features.build import load_records


def photos(folder, *names):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return folder


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def by_id(records):
    return {r.image_id: r for r in records}


def load_with_skips(path, folder, **kwargs):
    with collect_skips() as skipped:
        records = load_table(path, folder, **kwargs)
    return records, skipped


def skip_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "row(s)" in r.getMessage()]


# ---------------------------------------------------------------- layouts and columns

def test_csv_rows_become_one_record_per_image_with_its_split(tmp_path):
    table = write(tmp_path / "captions.csv",
                  "image,caption,split\n"
                  "beach/a.jpg,A dog runs on the sand.,train\n"
                  'b.jpg,"A cat, asleep.",val\n'
                  "beach/a.jpg,  A brown dog.  ,train\n")
    records = load_table(table, photos(tmp_path, "beach/a.jpg", "b.jpg"))
    assert [r.image_id for r in records] == ["beach/a.jpg", "b.jpg"]
    a, b = records
    assert a.captions == ["A dog runs on the sand.", "A brown dog."] and a.split == "train"
    assert a.image_path == str(tmp_path / "beach" / "a.jpg")
    assert b.captions == ["A cat, asleep."] and b.split == "val"


def test_renamed_columns_tsv_by_extension_and_extra_columns(tmp_path):
    table = write(tmp_path / "photos.tsv", "id\tFile\tText\tFold\n1\tx.png\tA red bus.\ttest\n2\ty.png\tTwo men.\ttrain\n")
    records = load_table(table, photos(tmp_path, "x.png", "y.png"), image_column="file",
                         caption_column="text", split_column="fold")  # header matched ignoring case
    assert [(r.image_id, r.captions, r.split) for r in records] == [
        ("x.png", ["A red bus."], "test"), ("y.png", ["Two men."], "train")]


def test_semicolon_delimiter_and_unquoted_commas_in_a_last_caption_column(tmp_path):
    table = write(tmp_path / "t.txt", "image;caption\na.jpg;A dog; a ball\n")
    assert load_table(table, photos(tmp_path, "a.jpg"), delimiter=";")[0].captions == ["A dog; a ball"]
    table = write(tmp_path / "u.csv", "image,caption\na.jpg,A dog, a ball, and grass\n")
    assert load_table(table, tmp_path)[0].captions == ["A dog, a ball, and grass"]


def test_json_lines_without_split_column_are_unsplit(tmp_path, caplog):
    lines = [{"photo": "a.jpg", "text": "A dog."}, {"photo": "a.jpg", "text": "A puppy."},
             {"photo": "b.jpg", "text": "A cat.", "extra": 3}]
    table = write(tmp_path / "t.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    with caplog.at_level(logging.INFO):
        records = load_table(table, photos(tmp_path, "a.jpg", "b.jpg"), image_column="photo", caption_column="text")
    assert [(r.image_id, r.captions, r.split) for r in records] == [
        ("a.jpg", ["A dog.", "A puppy."], UNSPLIT), ("b.jpg", ["A cat."], UNSPLIT)]
    assert "no 'split' column" in caplog.text


def test_utf8_bom_and_unicode_captions(tmp_path):
    table = write(tmp_path / "t.csv", "\ufeffimage,caption\ncafé.jpg,Un chien près du café.\n")
    assert load_table(table, photos(tmp_path, "café.jpg"))[0].captions == ["Un chien près du café."]


def test_load_dataset_dispatches_table_with_generic_names(tmp_path):
    table = write(tmp_path / "t.csv", "image,caption\na.jpg,A dog.\n")
    photos(tmp_path, "a.jpg")
    assert load_dataset("table", captions=table, images=tmp_path) == load_table(table, tmp_path)


# ---------------------------------------------------------------- splits through the config

def table_config(tmp_path, table, **data):
    return from_dict({"data": {"format": "table", "captions": str(table), "images": str(tmp_path), **data}})


def test_without_split_column_the_seeded_by_image_split_applies(tmp_path):
    names = [f"{i}.jpg" for i in range(10)]
    photos(tmp_path, *names)
    rows = "".join(f"{n},caption {k} of {n}\n" for n in names for k in range(2))
    table = write(tmp_path / "t.csv", "image,caption\n" + rows)
    cfg = table_config(tmp_path, table, splits={"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    records = load_records(cfg)
    assert sorted(r.split for r in records) == ["test"] * 2 + ["train"] * 6 + ["val"] * 2
    assert all(len(r.captions) == 2 for r in records)
    assert [(r.image_id, r.split) for r in load_records(cfg)] == [(r.image_id, r.split) for r in records]


def test_a_split_column_wins_over_data_splits(tmp_path):
    photos(tmp_path, "a.jpg", "b.jpg", "c.jpg")
    table = write(tmp_path / "t.csv", "image,caption,split\na.jpg,x y,train\nb.jpg,x z,train\nc.jpg,y z,test\n")
    records = load_records(table_config(tmp_path, table))
    assert by_id(records)["c.jpg"].split == "test" and by_id(records)["a.jpg"].split == "train"
    # split_column: null ignores the column: the seeded split of data.splits applies
    cfg = table_config(tmp_path, table, split_column=None, splits={"train": 0.5, "val": 0.5})
    assert {r.split for r in load_records(cfg)} == {"train", "val"}


# ---------------------------------------------------------------- malformed rows: logged skips

@pytest.mark.parametrize("row, reason", [
    ("a.jpg,,train", "empty caption"),
    (",A dog.,train", "no image name"),
    ("a.jpg", "1 field(s), the header has 3"),
    ("a.jpg,A pup.,", "empty split"),
    ("a.jpg,Another dog.,test", "split 'test' differs from the image's earlier rows ('train')"),
    ("b.jpg,A cat.,train", "repeats an earlier row of the same image and caption"),
])
def test_bad_csv_row_is_skipped_with_one_warning(tmp_path, caplog, row, reason):
    table = write(tmp_path / "t.csv", f"image,caption,split\na.jpg,A dog.,train\nb.jpg,A cat.,train\n{row}\n")
    photos(tmp_path, "a.jpg", "b.jpg")
    with caplog.at_level(logging.WARNING):
        records, skipped = load_with_skips(table, tmp_path)
    assert skip_warnings(caplog) == [f"{table}: skipped 1 row(s), e.g. row 4 ({reason})"]
    assert [s["reason"] for s in skipped] == [f"row 4: {reason} ({table})"]
    assert [(r.image_id, r.captions, r.split) for r in records] == [
        ("a.jpg", ["A dog."], "train"), ("b.jpg", ["A cat."], "train")]


def test_row_in_a_wrong_encoding_is_skipped(tmp_path, caplog):
    data = b"image,caption\na.jpg,A dog.\n" + "b.jpg,Un chien près du café.\n".encode("latin-1")
    table = write(tmp_path / "t.csv", data)
    photos(tmp_path, "a.jpg", "b.jpg")
    with caplog.at_level(logging.WARNING):
        records, skipped = load_with_skips(table, tmp_path)
    assert [r.image_id for r in records] == ["a.jpg"]
    assert skip_warnings(caplog) == [f"{table}: skipped 1 row(s), e.g. row 3 (not valid UTF-8 (re-save the "
                                     "table as UTF-8))"]
    assert skipped[0]["image_id"] == "b.jpg" and skipped[0]["reason"].startswith("row 3: not valid UTF-8")


def test_bad_json_lines_are_skipped(tmp_path, caplog):
    table = write(tmp_path / "t.jsonl", "\n".join([
        json.dumps({"image": "a.jpg", "caption": "A dog."}),
        '{"image": "b.jpg", "caption": ',
        json.dumps(["a.jpg", "A list."]),
        json.dumps({"image": "a.jpg", "caption": 7}),
        json.dumps({"image": "a.jpg"}),
    ]))
    photos(tmp_path, "a.jpg", "b.jpg")
    with caplog.at_level(logging.WARNING):
        records, skipped = load_with_skips(table, tmp_path)
    assert [(r.image_id, r.captions) for r in records] == [("a.jpg", ["A dog."])]
    (message,) = skip_warnings(caplog)
    assert message.startswith(f"{table}: skipped 4 row(s), e.g. row 2 (not valid JSON")
    assert "row 3 (a JSON list, not an object)" in message and "row 4 ('caption' is a int, not text)" in message
    assert [s["reason"].split(":")[0] for s in skipped] == ["row 2", "row 3", "row 4", "row 5"]


def test_missing_image_file_is_skipped_and_listed(tmp_path, caplog):
    table = write(tmp_path / "t.csv", "image,caption\na.jpg,A dog.\ngone.jpg,A ghost.\n")
    photos(tmp_path, "a.jpg")
    with caplog.at_level(logging.WARNING):
        records, skipped = load_with_skips(table, tmp_path)
    assert [r.image_id for r in records] == ["a.jpg"]
    assert "skipped 1 image(s) whose file is missing" in caplog.text
    assert skipped[0]["image_id"] == "gone.jpg" and skipped[0]["reason"].startswith("file not found")


def test_many_bad_rows_give_one_warning_with_three_examples(tmp_path, caplog):
    table = write(tmp_path / "t.csv", "image,caption\na.jpg,A dog.\n" + "a.jpg,\n" * 50)
    photos(tmp_path, "a.jpg")
    with caplog.at_level(logging.WARNING):
        load_table(table, tmp_path)
    (message,) = skip_warnings(caplog)
    assert message == f"{table}: skipped 50 row(s), e.g. row 3 (empty caption), row 4 (empty caption), row 5 (empty caption)"


# ---------------------------------------------------------------- one clear error

@pytest.mark.parametrize("text, message", [
    ("image,caption\n,A dog.\na.jpg,\n", r"t.csv: no usable row \(skipped 2: 1 no image name; 1 empty caption\)$"),
    ("image,caption\n", r"t.csv: no rows after the header$"),
    ("  \n\n", r"t.csv: the table is empty"),
    ("file,text\na.jpg,A dog.\n", r"t.csv: no 'image' column in the header \(file\|text\); name the table's columns "
     r"with data.image_column / data.caption_column"),
    ("image\ta caption\na.jpg\tA dog.\n", r"t.csv: no 'image' column in the header \('image\\ta caption'\).* \(and data.delimiter if not ','\)$"),
    ("image,caption\nnope.jpg,A dog.\n", r"t.csv: none of the 1 image files exist"),
])
def test_unusable_table_is_one_error_naming_the_file(tmp_path, text, message):
    table = write(tmp_path / "t.csv", text)
    with pytest.raises(CaptioningError, match=message):
        load_table(table, tmp_path)


def test_utf16_table_and_missing_file_are_errors(tmp_path):
    table = write(tmp_path / "t.csv", "image,caption\na.jpg,A dog.\n", encoding="utf-16")
    with pytest.raises(CaptioningError, match=r"t.csv: is UTF-16 text; re-save the table as UTF-8$"):
        load_table(table, tmp_path)
    with pytest.raises(CaptioningError, match=r"nope.csv: file not found$"):
        load_table(tmp_path / "nope.csv", tmp_path)


def test_cli_features_on_a_bad_table_is_one_line(tmp_path, capsys):
    from keras_captioning.cli import main

    table = write(tmp_path / "t.csv", "image,caption\na.jpg,\n")
    code = main(["features", "--set", "data.format=table", "--set", f"data.captions={table}",
                 "--set", f"features.out_dir={tmp_path / 'f'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert err.endswith(f"{table}: no usable row (skipped 1: 1 empty caption)")


# ---------------------------------------------------------------- config validation

@pytest.mark.parametrize("data, message", [
    ({"delimiter": ";;"}, r"data.delimiter=';;': expected null, \"tab\" or one character"),
    ({"delimiter": '"'}, r"data.delimiter='\"'"),
    ({"image_column": ""}, r"data.image_column='': expected a column name"),
    ({"caption_column": None}, r"data.caption_column=None: expected a column name"),
    ({"caption_column": "image"}, r"must name different columns"),
    ({"split_column": "caption"}, r"must name different columns"),
])
def test_config_rejects_bad_table_settings(data, message):
    with pytest.raises(CaptioningError, match=message):
        from_dict({"data": {"format": "table", **data}})


def test_config_accepts_tab_and_null_split_column(tmp_path):
    cfg = from_dict({"data": {"format": "table", "delimiter": "tab", "split_column": None}})
    assert cfg.data.delimiter == "\t" and cfg.data.split_column is None


def test_custom_example_config_loads():
    cfg = load_config("configs/custom_example.yaml")
    assert cfg.data.format == "table" and cfg.data.captions == "data/custom/captions.csv"
