"""The HTML review page written beside a score report: one self-contained file, no server,
no external assets (thumbnails are inline PNGs)."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.io import write_text


def thumbnail_png(image: np.ndarray, size: int = 96) -> bytes:
    """PNG of a preprocessed scan (C, *spatial): the image for 2D, for 3D the middle
    slices in the three planes side by side."""
    array = np.asarray(image, dtype=np.float32)[0]
    if array.ndim == 3:
        x, y, z = (s // 2 for s in array.shape)
        planes = [array[x, :, :], array[:, y, :], array[:, :, z]]
        side = max(max(p.shape) for p in planes)
        padded = [np.pad(p, ((0, side - p.shape[0]), (0, side - p.shape[1]))) for p in planes]
        array = np.concatenate([np.rot90(p) for p in padded], axis=1)
    low, high = np.percentile(array, [1, 99]) if array.size else (0, 1)
    scaled = np.clip((array - low) / max(high - low, 1e-6), 0, 1)
    picture = Image.fromarray((scaled * 255).astype(np.uint8))
    scale = size / max(picture.size)
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                             Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def review_order(report: pd.DataFrame, positive: str | None) -> pd.DataFrame:
    """Errors and flagged scans first, then scans called positive, then the rest."""
    rank = np.where(report["status"] != "ok", 0, np.where(report["needs_review"].astype(bool), 1, 3))
    if positive:
        rank = np.where((rank == 3) & (report["prediction"] == positive), 2, rank)
    return report.assign(_rank=rank).sort_values(["_rank", "scan_id"], kind="stable").drop(columns="_rank")


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
tr.error td {{ background: #fde2e2; }} tr.review td {{ background: #fff6cc; }} tr.positive td {{ background: #fde9d9; }}
.summary td {{ border: none; padding: 2px 12px 2px 0; }} img {{ image-rendering: pixelated; }}
</style></head><body>
<h1>{title}</h1>
<table class="summary">{summary}</table>
<h2>Operating point</h2><p>{operating_point}</p>
<h2>Scans ({n_rows}; flagged and {positive_word} first)</h2>
<table id="scans"><thead><tr><th>#</th><th>thumbnail</th><th>scan</th><th>prediction</th><th>probability</th>
<th>status</th><th>needs review</th><th>error</th></tr></thead><tbody>
{rows}
</tbody></table>
{truncated}
</body></html>
"""


def write_review_page(path, report: pd.DataFrame, thumbnails: dict[str, bytes], summary: dict,
                      calibration: dict, classes: list[str], title: str, max_rows: int = 2000) -> None:
    """Write the page; ``thumbnails`` maps scan_id -> PNG bytes (those missing show none)."""
    screening = calibration.get("screening")
    positive = screening["positive_class"] if screening else None
    ordered = review_order(report, positive)
    rows = []
    for number, row in enumerate(ordered.head(max_rows).itertuples(index=False), start=1):
        status, review = row.status, bool(row.needs_review) if row.status == "ok" else True
        css = "error" if status != "ok" else "review" if review else "positive" if row.prediction == positive else ""
        png = thumbnails.get(row.scan_id)
        image = f'<img alt="{html.escape(row.scan_id)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else ""
        probability = getattr(row, f"p_{positive}") if positive else row.confidence
        shown = "" if pd.isna(probability) else f"{float(probability):.3f}"
        rows.append(
            f'<tr class="{css}"><td>{number}</td><td>{image}</td><td>{html.escape(str(row.scan_id))}</td>'
            f"<td>{html.escape(str(row.prediction))}</td><td>{shown}</td><td>{html.escape(status)}</td>"
            f"<td>{'yes' if review else 'no'}</td><td>{html.escape(str(row.error))}</td></tr>"
        )
    counts = {"files": summary["files"], "scored": summary["scored"], "errors": summary["errors"],
              "needs review": summary["needs_review"],
              **{f"predicted {c}": n for c, n in summary["predicted"].items()}}
    summary_html = "".join(f"<tr><td>{html.escape(k)}</td><td><b>{v}</b></td></tr>" for k, v in counts.items())
    if screening:
        ci = screening.get("sensitivity_ci95")
        operating = (
            f"A scan is called <b>{html.escape(positive)}</b> when its calibrated probability is at least "
            f"{screening['decision']:.3f}: sensitivity {screening['sensitivity']:.3f}"
            + (f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else "")
            + f", specificity {screening['specificity']:.3f} on {screening['n_positive']} {html.escape(positive)} and "
            f"{screening['n_negative']} other calibration scans. Scans between {screening['review_low']:.3f} and "
            f"{screening['review_high']:.3f} are flagged for review."
        )
    else:
        operating = (f"Most probable class; a scan is flagged when its confidence is below the threshold at which "
                     f"its class reached precision {calibration.get('target_precision', '')} on "
                     f"{calibration.get('n_calibration', '?')} calibration scans.")
    for warning in calibration.get("warnings", []):
        operating += f"<br><b>Warning:</b> {html.escape(warning)}"
    truncated = (f"<p>Showing the first {max_rows} of {len(ordered)} rows; the CSV report has them all.</p>"
                 if len(ordered) > max_rows else "")
    write_text(path, PAGE.format(title=html.escape(title), summary=summary_html, operating_point=operating,
                                 n_rows=len(ordered), positive_word=html.escape(positive or "error"),
                                 rows="\n".join(rows), truncated=truncated))
