#!/usr/bin/env python3
"""VADER tweets, sign of the human rating: a seeded stratified 80/20 split, a bag-of-words
logistic-regression baseline on it, and the same split written as TSV files for `recur classify`.

    /work/venv/bin/python bench/vader_baseline.py --data ../shared/data/classify/vader_tweets/tweets_GroundTruth.txt \
        --out /tmp/vader
    target/release/recur classify train --data /tmp/vader/train.tsv --out /tmp/vader/run
    target/release/recur classify eval --checkpoint /tmp/vader/run/best.safetensors --data /tmp/vader/test.tsv

The data (TAB-separated id, mean rating in -4..+4, text) keeps the items with a non-zero rating
(4,196 of 4,200): label `pos` for a positive mean, `neg` for a negative one. The split holds out
20% of each class (Python's random.Random(seed)). The baselines, fitted on the 80% only, with the
regularisation C chosen by 5-fold stratified cross-validation on it:
  - majority class;
  - logistic regression on lower-cased word counts (scikit-learn's CountVectorizer, unigrams);
  - the same on unigrams and bigrams.
Needs scikit-learn (pip install scikit-learn).
"""

import argparse
import csv
import os
import random

from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline


def read(path):
    items = []
    with open(path, encoding="utf-8", newline="") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            _, rating, text = line.split("\t", 2)
            r = float(rating)
            if r != 0.0:
                items.append((text.strip(), "pos" if r > 0 else "neg"))
    return items


def split(items, fraction, seed):
    rng = random.Random(seed)
    train, test = [], []
    for label in sorted({l for _, l in items}):
        idx = [i for i, (_, l) in enumerate(items) if l == label]
        rng.shuffle(idx)
        held = round(len(idx) * fraction)
        test += idx[:held]
        train += idx[held:]
    return [items[i] for i in sorted(train)], [items[i] for i in sorted(test)]


def write(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        w.writerow(["text", "label"])
        for text, label in rows:
            w.writerow([text, label])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, help="folder for train.tsv and test.tsv")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    args = ap.parse_args()
    items = read(args.data)
    train, test = split(items, args.test_fraction, args.seed)
    os.makedirs(args.out, exist_ok=True)
    write(os.path.join(args.out, "train.tsv"), train)
    write(os.path.join(args.out, "test.tsv"), test)
    xs, ys = [t for t, _ in train], [l for _, l in train]
    xt, yt = [t for t, _ in test], [l for _, l in test]
    print(f"{len(items)} non-zero items: {len(train)} train, {len(test)} test (seed {args.seed})")
    majority = max(set(ys), key=ys.count)
    print(f"majority class ({majority}): test accuracy {sum(y == majority for y in yt) / len(yt):.4f}")
    folds = StratifiedKFold(5, shuffle=True, random_state=args.seed)
    for name, ngrams in [("bag of words, unigrams", (1, 1)), ("bag of words, uni+bigrams", (1, 2))]:
        pipe = make_pipeline(CountVectorizer(lowercase=True, ngram_range=ngrams), LogisticRegression(max_iter=5000))
        search = GridSearchCV(pipe, {"logisticregression__C": [0.03, 0.1, 0.3, 1, 3, 10, 30, 100]}, cv=folds)
        search.fit(xs, ys)
        acc = search.score(xt, yt)
        print(f"logistic regression, {name} (C={search.best_params_['logisticregression__C']}): test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
