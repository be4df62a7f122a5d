"""`mer report` in a real headless browser: the page renders, every embedded
image decodes (in Python and in Chromium), a screenshot is not blank; and a
directory that is not a run is refused with one line naming what is missing.

The run directory is assembled from the session fixtures (the small world,
the tiny DCM and CR models, their export and indexes), so the report costs
only itself plus a short `mer evaluate`.
"""

import base64
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from mer import cli

IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
# Records a browser-side fact per image once the page has loaded (the
# browser's own decode), for --dump-dom to show.
PROBE = """<script>window.addEventListener('load', () => { for (const img of document.images)
  img.setAttribute('data-decoded', img.complete + ':' + img.naturalWidth + 'x' + img.naturalHeight); });</script>"""
CHROMIUM = ("chromium", "--headless", "--no-sandbox", "--disable-gpu")


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        reason = "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), np.float32)


def _run_dir(root, world, trained, indexed) -> str:
    """A `mer demo`-shaped run directory over the session's read-only
    artifacts: links, plus real model directories so evaluation.json lands
    in this test's own copy."""
    run = root / "run"
    run.mkdir()
    (run / "data").symlink_to(world)
    (run / "export").symlink_to(indexed)
    for kind in ("dcm", "cr"):
        (run / kind).mkdir()
        for name in os.listdir(trained[kind]):
            if name != "evaluation.json":
                (run / kind / name).symlink_to(os.path.join(trained[kind], name))
    assert cli.main(["evaluate", "--model_dir", str(run / "dcm"), "--data_dir", world, "--ks", "20,50,100",
                     "--max_records", "200", "--served"]) == 0
    return str(run)


def test_report_renders_in_chromium(world, trained, indexed, tmp_path, capsys):
    chromium = _chromium()
    run = _run_dir(tmp_path, world, trained, indexed)
    assert cli.main(["report", run]) == 0
    out = os.path.join(run, "report.html")
    assert capsys.readouterr().out.strip().endswith(out)
    page = open(out).read()
    # Self-contained: no resource from anywhere else.
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//|file:)', page)
    images = IMG.findall(page)
    assert len(images) == page.count("<img") == 4  # curves, HR@K, Figure 5, Figure 6 heatmap
    for data in images:
        pixels = _png(base64.b64decode(data, validate=True))
        assert min(pixels.shape) > 100 and pixels.std() > 10, pixels.shape
    for text in ("Training curves", "HR@K per model", "dcm (dcm) HR", "Figure 5", "No MIND model in this run",
                 "Figure 6", "Implicit (DCM)", "Explicit (CR)", "interest "):
        assert text in page, text
    assert page.count("<li") >= 8  # retrieved items listed

    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([chromium, *CHROMIUM[1:], "--virtual-time-budget=5000", "--dump-dom",
                          f"file://{probe}"], capture_output=True, text=True, timeout=60, check=True).stdout
    decoded = re.findall(r'data-decoded="(\w+):(\d+)x(\d+)"', dom)
    assert len(decoded) == 4, dom[:500]
    assert all(done == "true" and int(w) > 100 and int(h) > 100 for done, w, h in decoded), decoded

    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *CHROMIUM[1:], f"--screenshot={shot}", "--window-size=1200,3000", f"file://{out}"],
                   capture_output=True, timeout=60, check=True)
    pixels = _png(shot.read_bytes())
    assert pixels.shape == (3000, 1200)
    assert pixels.var() > 100 and (pixels < 128).mean() > 0.01  # text and plots, not a blank page


def test_not_a_run_directory(tmp_path, capsys):
    (tmp_path / "dcm").mkdir()
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"mer report: error: {tmp_path} is not a `mer demo` run directory: missing")
    for part in ("data/manifest.json", "trained DCM model", "trained CR model", "export/user_implicit/<version>",
                 "export/index/explicit/<version>/build.json"):
        assert part in err, part
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
