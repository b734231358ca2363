"""`pip install .` gives a working nemolaunch: a real wheel, installed into a fresh venv, run outside the checkout.

The test suite otherwise runs an editable install, which reads the build script and the chat template
straight from the checkout; only a wheel shows whether they ship.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from gguf import GGUFReader

from conftest import REPO_ROOT

TEMPLATE = REPO_ROOT / "src" / "nemolaunch" / "data" / "nemotron3_chat_template.jinja"


def run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(word) for word in argv], capture_output=True, text=True, timeout=600, check=False, **kwargs
    )  # type: ignore[call-overload]


def test_a_wheel_installs_a_working_nemolaunch(tmp_path: Path) -> None:
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp_path / "dist", REPO_ROOT])
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("nemolaunch-*.whl")
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", venv]).returncode == 0
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    # The dependencies come from the test venv's site-packages, added as a plain path: the .pth files
    # there (the editable install of this checkout) are not read, so only the wheel provides nemolaunch.
    (site / "test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    installed = run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", wheel])
    assert installed.returncode == 0, installed.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    nemolaunch = venv / "bin" / "nemolaunch"

    where = run([python, "-c", "import nemolaunch; print(nemolaunch.__file__)"], cwd=outside)
    version = run([nemolaunch, "--version"], cwd=outside)
    script = run(
        [python, "-c", "from nemolaunch.adapters.builder import script_path; print(script_path().read_text(), end='')"],
        cwd=outside,
    )
    tiny = run([nemolaunch, "tiny-model", outside / "tiny.gguf"], cwd=outside)

    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    assert version.returncode == 0 and version.stdout.strip(), version.stderr
    assert script.stdout == (REPO_ROOT / "scripts" / "build_llamacpp.sh").read_text()
    assert tiny.returncode == 0, tiny.stderr
    template = GGUFReader(outside / "tiny.gguf").get_field("tokenizer.chat_template")
    assert template is not None and template.contents() == TEMPLATE.read_text()  # the shipped template
