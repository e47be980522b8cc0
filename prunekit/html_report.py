"""report.html: the comparison as one self-contained page (no network needed to view it).

Everything is inline: the CSS, the sorting script, and the plots as data URIs. The table sorts by
any column on a click (numbers by their mean, not their text); `#sort=K` or `#sort=-K` in the
address sorts by column K on load (descending with the minus), which is how a test checks the
script in a real browser. Once every image has loaded, `<body data-images-loaded="n/m">` says how
many of them decoded. Each run's resolved config is one click away (a `<details>` per run), and
failed or interrupted runs are listed with their error.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import List, Optional, Sequence

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1700px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #ddd;padding:4px 9px;text-align:right;white-space:nowrap}
th{background:#f3f4f6;cursor:pointer;user-select:none;position:sticky;top:0}
th.key,td.key{text-align:left}th[data-dir=asc]:after{content:" \\25B2"}
th[data-dir=desc]:after{content:" \\25BC"}tr:hover td{background:#fafafa}
figure{display:inline-block;margin:8px 16px 8px 0;vertical-align:top}
figure img{max-width:640px;border:1px solid #eee}figcaption{color:#555;font-size:12px}
details{margin:3px 0}summary{cursor:pointer}pre{background:#f6f8fa;padding:8px;overflow:auto}
.failed li{margin:4px 0}.note{color:#555;font-size:12px}.scroll{overflow-x:auto}
"""

SCRIPT = """
function sortTable(col, desc) {
  var table = document.getElementById('results'), body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = a.cells[col].getAttribute('data-sort'), y = b.cells[col].getAttribute('data-sort');
    var nx = parseFloat(x), ny = parseFloat(y), c;
    if (isNaN(nx) && isNaN(ny)) { c = x < y ? -1 : x > y ? 1 : 0; }
    else if (isNaN(nx)) { return 1; } else if (isNaN(ny)) { return -1; }  // empty cells last
    else { c = nx - ny; }
    return desc ? -c : c;
  });
  rows.forEach(function (r) { body.appendChild(r); });
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
    if (i === col) { th.setAttribute('data-dir', desc ? 'desc' : 'asc'); }
    else { th.removeAttribute('data-dir'); }
  });
}
function clicked(th) {
  sortTable(th.cellIndex, th.getAttribute('data-dir') === 'asc');
}
function countImages() {
  var imgs = document.images, done = 0, ok = 0;
  function settle() {
    done += 1;
    if (done >= imgs.length) {
      ok = Array.prototype.filter.call(imgs, function (i) { return i.naturalWidth > 0; }).length;
      document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
    }
  }
  if (!imgs.length) { document.body.setAttribute('data-images-loaded', '0/0'); }
  Array.prototype.forEach.call(imgs, function (i) {
    if (i.complete) { settle(); } else { i.onload = settle; i.onerror = settle; }
  });
}
window.addEventListener('load', function () {
  var m = /sort=(-?)(\\d+)/.exec(location.hash);
  if (m) { sortTable(parseInt(m[2], 10), m[1] === '-'); }
  countImages();
});
"""


def _num(value) -> str:
    """A cell's sort key: its mean as a number, or '' (sorted last)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(v) else repr(v)


def page(title: str, header: Sequence[str], keys: Sequence[str], cells: List[List[str]],
         sort_values: List[List[object]], images: Sequence[Path], failed: Sequence[dict],
         runs: Sequence[dict], note: str) -> str:
    """The page: `cells` are the table's text cells (mean ± std) under `header`; `sort_values`
    the same shape, each cell's number (or text) to sort by; `keys` the grouping columns (left
    aligned, sorted as text); `images` PNG files to inline; `runs` {label, run_dir, config}."""
    e = html.escape
    head = "".join(f'<th class="{"key" if h in keys else ""}" onclick="clicked(this)">{e(h)}</th>'
                   for h in header)
    body = []
    for row, sorts in zip(cells, sort_values):
        tds = []
        for h, cell, sort in zip(header, row, sorts):
            key = e(str(sort)) if h in keys else _num(sort)
            tds.append(f'<td class="{"key" if h in keys else ""}" data-sort="{key}">'
                       f'{e(str(cell))}</td>')
        body.append(f"<tr>{''.join(tds)}</tr>")
    figures = "".join(
        f'<figure><img alt="{e(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{e(p.stem)}</figcaption>'
        f"</figure>" for p in images)
    failed_items = "".join(
        f"<li><code>{e(str(f.get('run_dir')))}</code> ({e(str(f.get('method', '?')))}, "
        f"{e(str(f.get('model', '?')))}, seed {e(str(f.get('seed', '?')))}): "
        f"<b>{e(str(f.get('status')))}</b> — {e(str(f.get('error') or 'no error recorded'))}"
        f"</li>" for f in failed)
    run_items = "".join(
        f"<details><summary>{e(r['label'])} <span class='note'>{e(str(r['run_dir']))}</span>"
        f"</summary><pre>{e(r.get('config') or '(no config_resolved.yaml)')}</pre></details>"
        for r in runs)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}"
            f"</title><style>{CSS}</style><script>{SCRIPT}</script></head><body>"
            f"<h1>{e(title)}</h1><p class='note'>{e(note)} Click a column to sort.</p>"
            f"<div class='scroll'><table id='results'><thead><tr>{head}</tr></thead><tbody>"
            f"{''.join(body)}</tbody></table></div>"
            f"<h2>Plots</h2>{figures or '<p>No plots.</p>'}"
            f"<h2>Failed and interrupted runs</h2>"
            f"{'<ul class=failed>' + failed_items + '</ul>' if failed else '<p>None.</p>'}"
            f"<h2>Runs and their configs</h2>{run_items or '<p>None.</p>'}"
            f"</body></html>\n")


def config_text(run_dir: Path) -> Optional[str]:
    path = Path(run_dir) / "config_resolved.yaml"
    try:
        return path.read_text()
    except (OSError, ValueError):  # missing, unreadable, not text
        return None
