"""Label statistics (wsss.data.statistics): known answers on a hand-made label matrix, and the warnings."""

from __future__ import annotations

import numpy as np

from wsss.data.statistics import (
    cooccurring_pairs,
    frequent_classes,
    label_statistics,
    label_warnings,
)


def test_counts_cooccurrence_and_jaccard_are_the_known_answers() -> None:
    """Rows: images; columns a, b, c, d. Planted bug caught: counting co-occurrence with ``either`` or a
    transposed product gives other numbers."""
    y = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0], [1, 0, 0, 1]], bool)
    stats = label_statistics(y, ["a", "b", "c", "d"])
    assert stats["images"] == 5 and stats["images_per_class"] == [5, 3, 1, 1]
    assert stats["prevalence"] == [1.0, 0.6, 0.2, 0.2]
    assert stats["cooccurrence"][0] == [5, 3, 1, 1] and stats["cooccurrence"][1][2] == 0
    assert stats["jaccard"][0][1] == 3 / 5 and stats["jaccard"][2][3] == 0.0
    assert stats["labels_per_image"] == [0, 0, 5, 0, 0]
    assert frequent_classes(stats) == [("a", 1.0)]
    assert cooccurring_pairs(stats) == []


def test_warnings_name_a_frequent_class_a_rare_class_and_an_inseparable_pair() -> None:
    rng = np.random.default_rng(0)
    n = 200
    y = np.zeros((n, 4), bool)
    y[:, 0] = rng.uniform(size=n) < 0.96  # nearly always
    y[:, 1] = rng.uniform(size=n) < 0.4
    y[:, 2] = y[:, 1]  # always together with b
    y[:5, 3] = True  # five images
    lines = label_warnings(label_statistics(y, ["car", "b", "c", "rare"]))
    assert len(lines) == 3, lines
    assert lines[0].startswith("class 'car' is present in 9") and "add images without it" in lines[0]
    assert "class 'rare' has only 5 of the 200 images" in lines[1]
    assert "classes 'b' and 'c' appear together in 100 % of the images with either" in lines[2]
    y[:, 2] = rng.uniform(size=n) < 0.4  # independent of b now
    assert not any("'b' and 'c'" in line for line in label_warnings(label_statistics(y, ["car", "b", "c", "r"])))
