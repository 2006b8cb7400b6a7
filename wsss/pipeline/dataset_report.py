"""The dataset report, before anything trains: what a prepared (VOC-layout) dataset holds and what its image-level
labels can teach — images per split and per class, prevalence, the class co-occurrence matrix (a figure), image
sizes, labels per image, the masks available, and the warnings of :func:`wsss.data.statistics.label_warnings`.

Reads image headers only (no decoding) and the labels file; no torch. Writes a JSON, a markdown file with the
figure beside it, and a self-contained HTML page (the figure embedded), each atomically.
"""

from __future__ import annotations

import base64
import html
import os
from collections import Counter
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from wsss.data.dataset import VOCLayoutDataset
from wsss.data.statistics import label_statistics, label_warnings
from wsss.runtime.errors import InputError
from wsss.runtime.io import atomic_path, write_json, write_text


def dataset_summary(data: VOCLayoutDataset, split: str) -> dict[str, Any]:
    """Per split (every list under ImageSets/Segmentation): images and images with a mask; the label statistics of
    ``split`` (the classifier's training split) and their warnings; the image sizes (width × height counts) over
    all splits' images."""
    lists = sorted(p.stem for p in (data.root / "ImageSets" / "Segmentation").glob("*.txt"))
    if split not in lists:
        raise InputError(data.split_path(split), f"split {split!r} does not exist (splits: {lists})")
    splits, sizes, seen = {}, Counter(), set()
    for name in lists:
        ids = data.ids(name, labelled=False)
        splits[name] = {"images": len(ids), "masks": sum(data.has_mask(i) for i in ids)}
        for image_id in ids:
            if image_id in seen:
                continue
            seen.add(image_id)
            try:
                with Image.open(data.image_path(image_id)) as im:
                    sizes[f"{im.size[0]}x{im.size[1]}"] += 1
            except OSError as err:
                raise InputError(data.image_path(image_id), f"not a readable image ({err})") from None
    ids = data.ids(split)
    stats = label_statistics(
        np.stack([data.label_vector(i) > 0.5 for i in ids]) if ids else np.zeros((0, data.num_classes - 1), bool),
        data.classes[1:],
    )
    return {
        "root": str(data.root),
        "split": split,
        "splits": splits,
        "labels": stats,
        "image_sizes": dict(sizes.most_common()),
        "warnings": label_warnings(stats),
    }


def save_cooccurrence(summary: dict[str, Any], path: str | os.PathLike[str], title: str) -> None:
    """One PNG: the co-occurrence matrix as P(column | row) (of the images with the row's class, the share that
    also have the column's; the diagonal is the prevalence) with the counts, the prevalence bars and the histogram
    of labels per image."""
    stats = summary["labels"]
    names, both = stats["classes"], np.asarray(stats["cooccurrence"], np.float64)
    count = np.diag(both)
    cond = np.where(count[:, None] > 0, both / np.maximum(count[:, None], 1), 0.0)
    np.fill_diagonal(cond, stats["prevalence"])
    c = len(names)
    side = max(4.0, 0.55 * c + 2.5)
    fig, axes = plt.subplots(1, 3, figsize=(side + 7.5, side), gridspec_kw={"width_ratios": [side, 3.5, 3.5]})
    ax = axes[0]
    im = ax.imshow(cond, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(c), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(c), names, fontsize=8)
    if c <= 25:
        for i in range(c):
            for j in range(c):
                ax.text(
                    j,
                    i,
                    f"{100 * cond[i, j]:.0f}%\n{int(both[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if cond[i, j] < 0.6 else "black",
                )
    ax.set_title("P(column | row); diagonal: prevalence", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    axes[1].barh(range(c), stats["prevalence"], color="tab:blue")
    axes[1].set_yticks(range(c), names, fontsize=8)
    axes[1].invert_yaxis()
    axes[1].set_xlim(0, 1)
    axes[1].axvline(0.9, color="tab:red", linestyle="--", linewidth=1)
    axes[1].set_title("prevalence (share of images)", fontsize=9)
    per_image = stats["labels_per_image"]
    axes[2].bar(range(len(per_image)), per_image, color="tab:gray")
    axes[2].set_xlabel("labels per image")
    axes[2].set_title("images", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _tables(summary: dict[str, Any]) -> tuple[list[str], list[list[str]], list[list[str]], list[list[str]]]:
    stats = summary["labels"]
    splits = [[name, str(s["images"]), str(s["masks"])] for name, s in summary["splits"].items()]
    classes = [
        [n, str(k), f"{100 * p:.1f} %"]
        for n, k, p in zip(stats["classes"], stats["images_per_class"], stats["prevalence"])
    ]
    sizes = [[size, str(k)] for size, k in list(summary["image_sizes"].items())[:10]]
    return summary["warnings"], splits, classes, sizes


def markdown(summary: dict[str, Any], figure: str, title: str) -> str:
    """The report as markdown, the figure linked by its (relative) path."""
    warnings, splits, classes, sizes = _tables(summary)
    stats = summary["labels"]

    def table(head: list[str], rows: list[list[str]]) -> list[str]:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]

    lines = [
        f"# {title}",
        "",
        (f"Dataset `{summary['root']}`; label statistics of split `{summary['split']}` ({stats['images']} images)."),
        "",
        "## Warnings",
        "",
    ]
    lines += [f"- {w}" for w in warnings] or ["- none"]
    lines += [
        "",
        "## Splits",
        "",
        *table(["split", "images", "masks"], splits),
        "",
        "## Classes",
        "",
        *table(["class", "images", "prevalence"], classes),
        "",
        "Labels per image: " + ", ".join(f"{k}: {v}" for k, v in enumerate(stats["labels_per_image"]) if v),
        "",
        "## Image sizes (width x height)",
        "",
        *table(["size", "images"], sizes),
        "",
        f"![co-occurrence]({figure})",
        "",
    ]
    return "\n".join(lines)


def html_page(summary: dict[str, Any], figure_png: bytes, title: str) -> str:
    """The report as one self-contained HTML page (the figure embedded)."""
    warnings, splits, classes, sizes = _tables(summary)
    stats = summary["labels"]
    esc = html.escape

    def table(head: list[str], rows: list[list[str]]) -> str:
        cells = "".join(f"<th>{esc(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{cells}</tr>{body}</table>"

    items = "".join(f"<li>{esc(w)}</li>" for w in warnings) or "<li>none</li>"
    image = base64.b64encode(figure_png).decode("ascii")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
        "body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}.warn li{color:#a00}</style></head><body>"
        f"<h1>{esc(title)}</h1><p>Dataset <code>{esc(summary['root'])}</code>; label statistics of split "
        f"<code>{esc(summary['split'])}</code> ({stats['images']} images).</p>"
        f"<h2>Warnings</h2><ul class='warn'>{items}</ul>"
        f"<h2>Co-occurrence</h2><img alt='co-occurrence' src='data:image/png;base64,{image}'>"
        f"<h2>Splits</h2>{table(['split', 'images', 'masks'], splits)}"
        f"<h2>Classes</h2>{table(['class', 'images', 'prevalence'], classes)}"
        f"<p>Labels per image: {esc(', '.join(f'{k}: {v}' for k, v in enumerate(stats['labels_per_image']) if v))}"
        f"</p><h2>Image sizes (width x height)</h2>{table(['size', 'images'], sizes)}</body></html>\n"
    )


def write_report(summary: dict[str, Any], out_json: str, out_md: str, out_png: str, out_html: str, title: str) -> None:
    """Write the four outputs (the figure first; each atomically)."""
    save_cooccurrence(summary, out_png, title)
    with open(out_png, "rb") as fh:
        png = fh.read()
    write_text(
        out_md, markdown(summary, os.path.relpath(out_png, os.path.dirname(os.path.abspath(out_md)) or "."), title)
    )
    write_text(out_html, html_page(summary, png, title))
    write_json(out_json, summary)


__all__ = ["dataset_summary", "html_page", "markdown", "save_cooccurrence", "write_report"]
