"""For real: a model larger than its memory cgroup's limit, served by `nemolaunch serve --allow-disk`, answers.

The limit (half the model's size) bounds the page cache as well as llama-server's own memory, so the
experts that do not fit are read from the file again whenever a token routes to them. Skipped, loudly,
where no memory cgroup can be made (not root, no controller mounted); the group is removed after.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

from nemolaunch.scaled_model import ScaledShape, write_scaled_model

from conftest import cli_env, free_port, nemolaunch_argv, run_nemolaunch
from memory_cgroup import drop_cached_pages, make_memory_cgroup, why_no_memory_cgroup

#: The Ultra's routing (22 of 512 experts) at a width whose model is ~1.3 GB, experts ~90 % of it.
SHAPE = ScaledShape(n_embd=1024, blocks=2, n_expert=512, n_expert_used=22)
CTX_SIZE = 2048


@pytest.fixture(scope="module")
def routed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scaled_model(tmp_path_factory.mktemp("disk-backed") / "ultra-routed.gguf", SHAPE)


def _answer(port: int) -> dict[str, object]:
    body = {"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 8, "ignore_eos": True}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


def _wait_healthy(port: int, server: subprocess.Popen[bytes], timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the server exited ({server.returncode}) before it was ready"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("the server did not become healthy")


def test_a_model_larger_than_its_cgroup_answers_with_experts_paged_from_disk(
    routed_model: Path, llama_bin_dir: Path, tmp_path: Path
) -> None:
    reason = why_no_memory_cgroup()
    if reason is not None:
        warnings.warn(f"SKIPPED the disk-backed cgroup test: {reason}", stacklevel=1)
        pytest.skip(f"SKIPPED LOUDLY: {reason}; the disk-backed launch was not run for real")
    size = routed_model.stat().st_size
    limit = size // 2
    # This machine, with the cgroup's limit as its memory: the plan must page experts from disk.
    doctor = run_nemolaunch("doctor", "--json", env=cli_env(HF_HOME=str(tmp_path / "hf")))
    assert doctor.returncode == 0, doctor.stderr
    facts = json.loads(doctor.stdout)
    facts["gpus"] = []
    facts["memory"].update(total_bytes=limit, available_bytes=limit)
    hardware = tmp_path / "limited.json"
    hardware.write_text(json.dumps(facts))
    common = ("--hardware", str(hardware), "--allow-disk", "--ctx-size", str(CTX_SIZE), "--parallel", "1")
    planned = run_nemolaunch("plan", str(routed_model), *common, "--json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["placement"] == "ram+disk" and plan["disk"]["disk_bytes"] > 0
    plain = run_nemolaunch("plan", str(routed_model), "--hardware", str(hardware), "--ctx-size", str(CTX_SIZE))
    assert plain.returncode == 6, plain.stderr  # without --allow-disk it does not fit

    drop_cached_pages(routed_model)  # else pages cached outside the group are not charged to it
    group = make_memory_cgroup(f"nl17-test-{os.getpid()}", limit)
    port = free_port()
    argv = nemolaunch_argv("serve", str(routed_model), *common, "--port", str(port), "--llama-cpp", str(llama_bin_dir))
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(group.prefix() + argv, stdout=output, stderr=subprocess.STDOUT, env=cli_env())
    try:
        _wait_healthy(port, server)
        reply = _answer(port)
        content = reply["choices"][0]["message"]  # type: ignore[index]
        assert reply["usage"]["completion_tokens"] > 0, reply  # type: ignore[index]
        assert content is not None
        peak = group.peak_bytes()
        assert peak <= limit < size  # the whole model never was in this group's memory at once
        assert group.oom_kills() == 0
        text = log.read_text(errors="replace")
        assert "--allow-disk" not in text or "--no-repack" in text  # the command it printed, and ran
        assert "--no-repack" in text
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        group.remove()
    assert not group.path.exists()
