"""`dvc plots show` renders offline (#13): DVC's default page loaded vega from a CDN, so the plots were blank
without a network. .dvc/config's html_template loads the vendored copies in assets/vega/."""

import re
import subprocess
import sys
from pathlib import Path


def test_dvc_plots_page_loads_only_local_scripts(repo_root, tmp_path):
    dvc = Path(sys.executable).parent / "dvc"
    out = tmp_path / "dvc_plots"
    result = subprocess.run([str(dvc), "plots", "show", "-o", str(out)], cwd=repo_root, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    page = (out / "index.html").read_text()
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert scripts, "no vega scripts on the page"
    assert not [s for s in scripts if "://" in s], scripts
    default_out = repo_root / "dvc_plots"  # the relative paths resolve against the default output folder
    assert all((default_out / s).resolve().is_file() for s in scripts), scripts
    assert "vegaEmbed(" in page  # the vega plots are on it, not only the images
