"""llama-server's web chat: built into nemolaunch's build, opened in a real headless browser (Debian's
Chromium driven by Playwright), answering with the scripted model's exact thinking and answer; and a
build without it, which `serve` says, pointing to `nemolaunch chat`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nemolaunch.adapters.builder import BuildRequest, run_build, web_ui_of
from nemolaunch.scripted_model import write_scripted_model
from test_build import fake_llama_cpp_tree

from conftest import cli_env, free_port, llama_cpp_shim, path_without, run_nemolaunch, write_gguf
from test_smoke import process_alive, start_serve, stop_with_sigint, wait_for_health

CHROMIUM = os.environ.get("NEMOLAUNCH_TEST_CHROMIUM", "/usr/bin/chromium")
# Headless, and nothing a test machine lacks or that reaches past loopback.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--disable-extensions", "--no-first-run"]  # fmt: skip
SCRIPT = ["Let me think.", "</think>", "Hello there!", "<|im_end|>"]


def _has_web_ui(llama_bin_dir: Path) -> None:
    web_ui = web_ui_of(llama_bin_dir)
    if web_ui is not None and not web_ui.startswith("none"):
        return
    if shutil.which("npm") and web_ui is not None:
        pytest.fail(f"npm is here, yet the build under test has no web UI ({web_ui}): see its build.log")
    pytest.skip(f"the llama.cpp build under test has no web UI ({web_ui or 'not a nemolaunch build'})")


@pytest.mark.llama
def test_the_web_chat_answers_in_a_real_browser(llama_bin_dir: Path, tmp_path: Path) -> None:
    _has_web_ui(llama_bin_dir)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (`apt-get install chromium`; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")

    model = write_scripted_model(tmp_path / "scripted.gguf", SCRIPT)
    port = free_port()
    server = start_serve(model, llama_bin_dir, port, env=cli_env())
    try:
        wait_for_health(port, server)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("textarea", timeout=60_000)
            page.fill("textarea", "What is 2+2?")
            page.keyboard.press("Enter")
            answer = page.get_by_text("Hello there!", exact=True)
            answer.wait_for(timeout=60_000)
            # The thinking is folded under "Reasoning", apart from the answer: unfold it and read it.
            page.get_by_text("Reasoning", exact=True).first.click()
            page.get_by_text("Let me think.", exact=True).wait_for(timeout=30_000)
            assert page.get_by_text("What is 2+2?", exact=True).count() >= 1
            browser.close()
    finally:
        stop_with_sigint(server)
    output = server.stdout.read() if server.stdout else ""
    assert f"Web chat at http://127.0.0.1:{port}/ (built with npm" in output or "(prebuilt" in output
    assert not process_alive(server.pid)


def test_serve_says_when_the_build_has_no_web_chat(tmp_path: Path) -> None:
    shim = llama_cpp_shim(tmp_path / "build" / "bin")
    (shim.parent / "build-stamp.txt").write_text("backend=cpu\n")  # one of nemolaunch's builds, from before the UI
    model = write_gguf(tmp_path / "m.gguf")
    result = run_nemolaunch("serve", str(model), "--llama-cpp", str(shim), "--port", "8123", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert (
        "No web chat at http://127.0.0.1:8123/ (none: this build predates nemolaunch's web UI support; run "
        "`nemolaunch build` again to add it): chat in the terminal with `nemolaunch chat --url "
        "http://127.0.0.1:8123/v1`."
    ) in result.stderr.replace("\n", " ")


def _fake_npm_path(tmp_path: Path) -> str:
    """PATH with an npm (never run: the fake tree has no UI to build) for the script's --web-ui npm check."""
    shims = tmp_path / "npm-bin"
    shims.mkdir()
    for name, answer in (("npm", "10.0.0"), ("node", "v20.0.0")):
        (shims / name).write_text(f"#!/bin/sh\necho {answer}\n")
        (shims / name).chmod(0o755)
    return f"{shims}:{os.environ['PATH']}"


def test_a_cached_build_without_the_ui_is_rebuilt_with_it(tmp_path: Path) -> None:
    """The UI is part of the build's identity: the stamp changes, so a build without it is not 'up to date'."""
    tree = fake_llama_cpp_tree(tmp_path / "src")
    # Like llama.cpp's tools/ui: with LLAMA_BUILD_UI on, the generated header says assets were embedded.
    with (tree / "CMakeLists.txt").open("a") as cmake:
        cmake.write("if(LLAMA_BUILD_UI)\n")
        cmake.write('  file(WRITE ${CMAKE_BINARY_DIR}/tools/ui/ui.h "#define LLAMA_UI_HAS_ASSETS 1\\n")\n')
        cmake.write("endif()\n")
    env = {**os.environ, "PATH": _fake_npm_path(tmp_path)}
    prefix = tmp_path / "prefix"
    without = run_build(BuildRequest(backend="cpu", source=tree, ref=None, jobs=2, prefix=prefix), env=env)
    assert not without.up_to_date and without.web_ui.startswith("none")
    assert "-DLLAMA_BUILD_UI" not in (prefix / "build-stamp.txt").read_text()

    request = BuildRequest(backend="cpu", source=tree, ref=None, jobs=2, prefix=prefix, web_ui="npm")
    with_ui = run_build(request, env=env)
    assert not with_ui.up_to_date  # rebuilt, now with the UI
    assert with_ui.web_ui == "built with npm (v20.0.0)"
    stamp = (prefix / "build-stamp.txt").read_text()
    assert "-DLLAMA_BUILD_UI=ON -DLLAMA_USE_PREBUILT_UI=OFF" in stamp and "node v20.0.0" in stamp
    assert run_build(request, env=env).up_to_date


def test_the_ui_gets_its_own_build_folder_and_auto_means_npm_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from nemolaunch.adapters.builder import build_prefix, web_ui_mode

    root = Path("/builds")
    plain = build_prefix(root, backend="cpu", source=None, ref=None)
    assert plain.name.startswith("cpu-") and "ui" not in plain.name  # the folder of builds made before
    assert build_prefix(root, backend="cpu", source=None, ref=None, web_ui="npm").name == "cpu-ui-" + plain.name[4:]
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert web_ui_mode("auto", hub_reachable=lambda: True) == "prebuilt"
    assert web_ui_mode("auto", hub_reachable=lambda: False) == "off"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert web_ui_mode("auto", hub_reachable=lambda: True) == "off"
    assert web_ui_mode("npm") == "npm"


def test_build_refuses_npm_without_npm(tmp_path: Path) -> None:
    tree = fake_llama_cpp_tree(tmp_path / "src")
    env = cli_env(PATH=path_without(tmp_path, "npm"))
    result = run_nemolaunch("build", "--backend", "cpu", "--web-ui", "npm", "--source", str(tree),
                            "--prefix", str(tmp_path / "p"), env=env)  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "nemolaunch: error: --web-ui npm needs npm: install Node.js 20 or newer with npm, or pass --web-ui off"
    )
