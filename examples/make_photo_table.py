"""
Title: Make a caption table of your own photos from a Karpathy split file
Description: A folder of photos and a CSV (own column names, a few bad rows) for `data.format: table`.

"Train on your own photos" (README) needs a folder of photos and a table with one row per
(image, caption). This script makes one from any Karpathy split file (e.g. Flickr8k's
`dataset_flickr8k.json` and its photos): it links (or copies) `COUNT` photos into a new
folder, writes their captions to a CSV whose columns are named `photo` and `description` (not
the defaults, to exercise the mapping) and, unless `--clean`, appends three bad rows that the
loader and the features step skip and the evaluation report lists: an empty caption, a missing
photo and a text file named `.jpg`. It prints the three commands to run on it.
"""

import argparse
import csv
import json
import os
import random
import shutil

# ## Setup
SPLIT_FILE = "data/flickr8k/dataset_flickr8k.json"
IMAGES = "data/flickr8k/images"
OUT = "data/my_photos"
COUNT = 300
IMAGE_COLUMN, CAPTION_COLUMN = "photo", "description"

parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[1].split(": ", 1)[1])
parser.add_argument("--split-file", default=SPLIT_FILE, help="a Karpathy split file")
parser.add_argument("--images", default=IMAGES, help="the folder its file names are relative to")
parser.add_argument("--out", default=OUT, help="new folder: photos/ and captions.csv")
parser.add_argument("--count", type=int, default=COUNT, help="how many photos")
parser.add_argument("--copy", action="store_true", help="copy the photos instead of linking them")
parser.add_argument("--clean", action="store_true", help="no bad rows")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

# ## Choose the photos
with open(args.split_file, encoding="utf-8") as fh:
    entries = [e for e in json.load(fh)["images"] if os.path.isfile(os.path.join(args.images, e["filename"]))]
if not entries:
    raise SystemExit(f"{args.split_file}: none of its photos is in {args.images}")
chosen = random.Random(args.seed).sample(entries, min(args.count, len(entries)))

# ## Write the folder and the table
photos = os.path.join(args.out, "photos")
os.makedirs(photos, exist_ok=True)
rows = []
for entry in chosen:
    source, target = os.path.join(args.images, entry["filename"]), os.path.join(photos, entry["filename"])
    if not os.path.exists(target):
        if args.copy:
            shutil.copyfile(source, target)
        else:
            os.symlink(os.path.abspath(source), target)
    rows += [(entry["filename"], s.get("raw") or " ".join(s["tokens"])) for s in entry["sentences"]]
if not args.clean:
    with open(os.path.join(photos, "notes.jpg"), "w", encoding="utf-8") as fh:
        fh.write("not a photo\n")
    rows += [(chosen[0]["filename"], ""), ("not_there.jpg", "A photo that was never copied."),
             ("notes.jpg", "A text file named like a photo.")]
table = os.path.join(args.out, "captions.csv")
with open(table, "w", newline="", encoding="utf-8") as fh:
    writer = csv.writer(fh)
    writer.writerow([IMAGE_COLUMN, CAPTION_COLUMN])
    writer.writerows(rows)

# ## What to run
name = os.path.basename(os.path.normpath(args.out))
sets = (f"--set data.captions={table} --set data.images={photos} --set data.image_column={IMAGE_COLUMN} "
        f"--set data.caption_column={CAPTION_COLUMN} --set features.out_dir=features/{name} "
        f"--set train.run_dir=runs/{name}")
print(f"{table}: {len(rows)} rows, {len(chosen)} photos in {photos}")
print(f"python -m keras_captioning features --config configs/custom_example.yaml {sets}")
print(f"python -m keras_captioning train    --config configs/custom_example.yaml {sets}")
print(f"python -m keras_captioning evaluate --run runs/{name}")
