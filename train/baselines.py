"""Reference points for single-label text datasets (MELD): the majority class and TF-IDF + logistic
regression (scikit-learn). Scored by the same metric code as the model."""

from __future__ import annotations

from collections import Counter

import numpy as np

from merclip.errors import MerClipError

BASELINES = ("majority", "tfidf")


def predict(kind: str, train_texts: list[str], train_labels: list[int], texts: list[str], seed: int = 0) -> np.ndarray:
    if kind not in BASELINES:
        raise MerClipError(f"baseline must be one of {', '.join(BASELINES)}")
    if not train_texts:
        raise MerClipError("the baseline needs the dataset's train split to fit on (e.g. train_sent_emo.csv)")
    if kind == "majority":
        return np.full(len(texts), Counter(train_labels).most_common(1)[0][0])
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise MerClipError("the tfidf baseline needs scikit-learn: pip install scikit-learn") from None
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    features = vectorizer.fit_transform(train_texts)
    clf = LogisticRegression(max_iter=2000, C=2.0, random_state=seed).fit(features, train_labels)
    return clf.predict(vectorizer.transform(texts))
