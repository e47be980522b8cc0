"""report.html: one self-contained page, and what a real browser (headless Chromium) makes of it."""
import re
import shutil
import subprocess

import pytest
from test_report import write_summary

from prunekit.report import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
METHODS = ["oneshot", "iterative", "gradual"]


def sweep(tmp_path):
    """Three methods x two seeds with their configs and layers.csv, and one failed run."""
    runs = tmp_path / "runs"
    for i, method in enumerate(METHODS):
        for seed in (0, 1):
            d = runs / f"{method}{seed}"
            write_summary(d, method=method, seed=seed, top1=90.0 + i + 0.1 * seed,
                          sparsity=0.5 + 0.1 * i, time_total_s=10.0 * (3 - i),
                          target_kind="flops", target_value=2.0, run_dir=str(d))
            (d / "config_resolved.yaml").write_text(f"method:\n  name: {method}\nseed: {seed}\n")
            (d / "layers.csv").write_text(
                "layer,prunable,density\nconv1,False,1.0\n"
                f"layer1.conv1,True,{0.6 - 0.1 * i}\nlayer1.conv2,True,{0.4 + 0.1 * seed}\n")
    write_summary(runs / "broken", status="failed", method="ice", error="ConfigError: boom")
    return report([runs], plots=True, show=False), runs


def test_the_html_report_is_one_self_contained_page(tmp_path):
    got, runs = sweep(tmp_path)
    page = (runs / "report.html").read_text()
    assert runs / "report.html" in got["written"]
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing to fetch
    assert "<link" not in page and "<script src" not in page
    images = re.findall(r'<img [^>]*src="data:image/png;base64,', page)
    pngs = [p for p in got["written"] if p.suffix == ".png"]
    assert len(images) == len(pngs) == 4  # three plots and the per-layer heat map
    body = page[page.index("<tbody>"):page.index("</tbody>")]
    assert sorted(re.findall(r'<td class="key" data-sort="(\w+)">\1</td><td class="key" '
                             r'data-sort="flops 2×">', body)) == sorted(METHODS)
    assert "90.00 ± 0.07" in body or "90.05 ± 0.07" in body  # mean ± std over the seeds
    assert page.count("<details>") == 6 and "name: gradual" in page  # each run's config
    assert "ConfigError: boom" in page  # the failed run, with its error


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: "
                                             "apt-get install chromium)")
@pytest.mark.parametrize("column, descending", [(5, True), (5, False), (2, False)])
def test_the_report_sorts_and_shows_every_image_in_headless_chromium(tmp_path, column,
                                                                     descending):
    _, runs = sweep(tmp_path)
    url = f"file://{runs / 'report.html'}#sort={'-' if descending else ''}{column}"
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--virtual-time-budget=5000", "--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    dom = r.stdout
    assert re.search(r'<body[^>]*data-images-loaded="4/4"', dom), dom[:500]
    body = dom[dom.index("<tbody>"):dom.index("</tbody>")]
    rows = [re.findall(r'data-sort="([^"]*)"', row) for row in re.findall(r"<tr>(.*?)</tr>", body)]
    assert len(rows) == len(METHODS)
    keys = [row[column] for row in rows]
    expected = sorted(keys, key=float if column != 2 else str, reverse=descending)
    assert keys == expected and len(set(keys)) == len(keys)
    header = re.search(r'<th[^>]*data-dir="(\w+)"[^>]*>([^<]*)', dom)
    assert header.group(1) == ("desc" if descending else "asc")
