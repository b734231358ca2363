"""plan, download and serve of a Hub model through the real CLI, against the fake Hub on loopback.

The model is the tiny Nemotron-architecture GGUF split into three shards by the real
llama-gguf-split, published as quant UD-Q2_K_XL beside a single-file Q8_0 and side files.
"""

from __future__ import annotations

import json
import subprocess
from operator import itemgetter
from pathlib import Path

import pytest

from conftest import REPO_ROOT, free_port, nemolaunch_argv, run_nemolaunch, sigint_default
from fakehub import FakeHub, fake_hub_fixture  # noqa: F401  (fixture)
from test_smoke import stop_with_sigint, wait_for_health

REPO = "acme/Tiny-Nemotron-GGUF"
SPLIT_QUANT = "UD-Q2_K_XL"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, llama_bin_dir: Path) -> dict[str, bytes]:
    """The repository's files: the tiny model as 3 real split shards, a single-file quant, and side files."""
    from nemolaunch.tiny_model import write_tiny_model

    folder = tmp_path_factory.mktemp("publish")
    whole = write_tiny_model(folder / "tiny.gguf")
    split = subprocess.run(
        [str(llama_bin_dir / "llama-gguf-split"), "--split", "--split-max-tensors", "15", str(whole),
         str(folder / "Tiny-Nemotron-UD-Q2_K_XL")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert split.returncode == 0, split.stderr
    files = {
        f"{SPLIT_QUANT}/Tiny-Nemotron-{SPLIT_QUANT}-{index:05d}-of-00003.gguf": (
            folder / f"Tiny-Nemotron-UD-Q2_K_XL-{index:05d}-of-00003.gguf"
        ).read_bytes()
        for index in (1, 2, 3)
    }
    files["Q8_0/Tiny-Nemotron-Q8_0.gguf"] = whole.read_bytes() + b""  # a second quant, never asked for
    files["mmproj-F16.gguf"] = b"GGUF side file"
    files["README.md"] = b"# Tiny Nemotron\n"
    return files


@pytest.fixture
def hub(fake_hub: FakeHub, published: dict[str, bytes]) -> FakeHub:
    fake_hub.add_repo(REPO, published)
    return fake_hub


def test_plan_lists_the_hubs_quants_with_real_sizes(hub: FakeHub, big_machine: Path, tmp_path: Path) -> None:
    result = run_nemolaunch("plan", REPO, "--hardware", str(big_machine), "--json", env=hub.env(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["source"] == "hub"
    by_name = {quant["name"]: quant for quant in plan["quants"]}
    assert set(by_name) == {SPLIT_QUANT, "Q8_0"}  # mmproj and README are not quants
    split_size = sum(len(v) for k, v in hub.repos[REPO].files.items() if k.startswith(SPLIT_QUANT))
    assert by_name[SPLIT_QUANT]["size_bytes"] == split_size
    assert plan["quant"] == "Q8_0" and plan["fits"] is True  # the better quant fits
    assert plan["local"] is False
    assert plan["command"][plan["command"].index("--model") + 1] == "Q8_0/Tiny-Nemotron-Q8_0.gguf"


def test_download_fetches_exactly_one_quant_then_nothing(hub: FakeHub, big_machine: Path, tmp_path: Path) -> None:
    env = hub.env(tmp_path / "hf")
    first = run_nemolaunch("download", f"{REPO}:{SPLIT_QUANT}", "--hardware", str(big_machine), "--json", env=env)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    shards = [f"{SPLIT_QUANT}/Tiny-Nemotron-{SPLIT_QUANT}-{index:05d}-of-00003.gguf" for index in (1, 2, 3)]
    assert sorted(result["files"]) == shards
    for name, local in result["files"].items():
        assert Path(local).read_bytes() == hub.repos[REPO].files[name]
        assert str(tmp_path / "hf" / "hub") in local  # the shared HF cache
    # Other files are at most read for their GGUF header (a Range from byte 0, for the plan), never stored.
    others = [record for record in hub.requests if record.file and record.file not in result["files"]]
    assert all(record.method == "GET" and (record.range or "").startswith("bytes=0-") for record in others)
    assert not any("mmproj" in (record.file or "") for record in hub.requests)
    stored = {path.name for path in (tmp_path / "hf" / "hub").rglob("*.gguf")}
    assert stored == {Path(name).name for name in result["files"]}
    # The repo is listed once: the plan's listing (sizes, sha256s, commit) serves the download too.
    assert [record.path for record in hub.requests if record.path.startswith("/api/")] == [
        f"/api/models/{REPO}/revision/main"
    ]

    hub.reset_counters()
    again = run_nemolaunch("download", f"{REPO}:{SPLIT_QUANT}", "--hardware", str(big_machine), "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["fetched_bytes"] == 0
    assert all(hub.served(REPO, name) == 0 for name in result["files"])

    # huggingface_hub itself finds the same files in the cache and fetches nothing.
    hub.reset_counters()
    shared = subprocess.run(
        [nemolaunch_argv()[0], "-c",
         f"from huggingface_hub import hf_hub_download; print(hf_hub_download({REPO!r}, "
         f"{f'{SPLIT_QUANT}/Tiny-Nemotron-{SPLIT_QUANT}-00002-of-00003.gguf'!r}))"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert shared.returncode == 0, shared.stderr
    assert shared.stdout.strip() == result["files"][f"{SPLIT_QUANT}/Tiny-Nemotron-{SPLIT_QUANT}-00002-of-00003.gguf"]
    assert sum(hub.served(REPO, name) for name in result["files"]) == 0


def test_serve_goes_from_an_empty_cache_to_an_answer(
    hub: FakeHub, big_machine: Path, tmp_path: Path, llama_bin_dir: Path, port: int,
    processes: list[subprocess.Popen[str]],
) -> None:  # fmt: skip
    env = hub.env(tmp_path / "hf")
    process = subprocess.Popen(
        nemolaunch_argv(
            "serve", f"{REPO}:{SPLIT_QUANT}", "--port", str(port), "--hardware", str(big_machine),
            "--llama-cpp", str(llama_bin_dir), "--", "--threads", "1",
        ),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    processes.append(process)
    wait_for_health(port, process)
    cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
    model = Path(cmdline[cmdline.index(b"--model") + 1].decode())
    assert model.name == f"Tiny-Nemotron-{SPLIT_QUANT}-00001-of-00003.gguf"
    assert str(tmp_path / "hf" / "hub") in str(model)
    assert cmdline[cmdline.index(b"--alias") + 1] == REPO.encode()

    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
    reply = client.chat.completions.create(model=REPO, messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert reply.choices and reply.usage is not None and reply.usage.completion_tokens > 0
    stop_with_sigint(process)
    output = process.stdout.read() if process.stdout else ""
    assert f"plan: {REPO}:{SPLIT_QUANT}" in output
    # Not a terminal: one plain line per finished shard, no progress bars.
    ready = [line for line in output.splitlines() if line.startswith("ready: ")]
    shards = [f"{SPLIT_QUANT}/Tiny-Nemotron-{SPLIT_QUANT}-{index:05d}-of-00003.gguf" for index in (1, 2, 3)]
    assert sorted(ready) == [f"ready: {shard}" for shard in shards]
    assert "━" not in output


def test_no_download_refuses_and_offline_names_what_is_missing(
    hub: FakeHub, big_machine: Path, tmp_path: Path, llama_bin_dir: Path
) -> None:
    env = hub.env(tmp_path / "hf")
    refused = run_nemolaunch(
        "serve", f"{REPO}:{SPLIT_QUANT}", "--no-download", "--hardware", str(big_machine), "--dry-run", env=env
    )
    assert refused.returncode == 3
    assert f"{REPO}:{SPLIT_QUANT} is not downloaded yet: run `nemolaunch download" in refused.stderr

    # Offline the catalog comes from the cache, which has nothing of this repo yet.
    offline_env = {**env, "HF_HUB_OFFLINE": "1"}
    offline = run_nemolaunch("download", f"{REPO}:{SPLIT_QUANT}", "--hardware", str(big_machine), env=offline_env)
    assert offline.returncode != 0
    assert "nemolaunch: error:" in offline.stderr and "Traceback" not in offline.stderr

    assert run_nemolaunch("download", f"{REPO}:{SPLIT_QUANT}", "--hardware", str(big_machine), env=env).returncode == 0
    hub.reset_counters()
    cached = run_nemolaunch(
        "serve", f"{REPO}:{SPLIT_QUANT}", "--hardware", str(big_machine), "--llama-cpp", str(llama_bin_dir),
        "--dry-run", env=offline_env,
    )  # fmt: skip
    assert cached.returncode == 0, cached.stderr
    assert f"Tiny-Nemotron-{SPLIT_QUANT}-00001-of-00003.gguf" in cached.stdout
    assert hub.requests == []  # offline means offline


@pytest.mark.parametrize(
    ("model", "code", "words"),
    [
        (f"{REPO}:IQ9_ZZZ", 3, "Q8_0"),  # unknown quant lists those that exist
        ("acme/No-Such-Repo-GGUF", 3, "acme/No-Such-Repo-GGUF was not found"),
        ("acme/:Q4", 2, "acme/:Q4"),
    ],
)
def test_bad_models(hub: FakeHub, big_machine: Path, tmp_path: Path, model: str, code: int, words: str) -> None:
    result = run_nemolaunch("plan", model, "--hardware", str(big_machine), env=hub.env(tmp_path / "hf"))
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1 and words in errors[0]


def test_repo_without_gguf(hub: FakeHub, big_machine: Path, tmp_path: Path) -> None:
    hub.add_repo("acme/Plain-Model", {"README.md": b"# no gguf here\n", "model.safetensors": b"\0" * 64})
    result = run_nemolaunch("plan", "acme/Plain-Model", "--hardware", str(big_machine), env=hub.env(tmp_path / "hf"))
    assert result.returncode == 3
    assert "acme/Plain-Model" in result.stderr and "GGUF" in result.stderr


GOLDEN = {
    "b200x4.json": ("UD-Q8_K_XL", "gpu"),
    "h100x8.json": ("UD-Q8_K_XL", "gpu"),
    "rtx4090_256gb.json": ("UD-IQ3_XXS", "gpu+cpu-experts"),
    "mac_studio_m3_ultra_512gb.json": ("UD-Q5_K_XL", "metal"),
    "cpu_epyc_384gb.json": ("UD-Q4_K_XL", "cpu"),
    "h200_shared.json": ("UD-Q4_K_XL", "gpu+cpu-experts"),
    "rtx3090x2_128gb.json": (None, None),
    "mac_m3_ultra_256gb.json": (None, None),
    "laptop_64gb.json": (None, None),
}


@pytest.mark.parametrize("machine", sorted(GOLDEN))
def test_ultra_plan_for_recorded_machines(machine: str, tmp_path: Path) -> None:
    """`plan --hardware FILE --json` through the CLI, offline: the built-in Ultra catalog."""
    from conftest import cli_env

    env = cli_env(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    facts = REPO_ROOT / "tests" / "fixtures" / "hardware" / machine
    result = run_nemolaunch("plan", "--hardware", str(facts), "--json", env=env)
    plan = json.loads(result.stdout)  # stdout is the one JSON object, even when nothing fits
    quant, placement = GOLDEN[machine]
    assert (plan["quant"], plan["placement"]) == (quant, placement)
    assert plan["source"] == "builtin"
    assert plan["fits"] is (quant is not None)
    assert result.returncode == (0 if quant else 6)
    if quant is None:
        assert plan["command"] is None and plan["ways_out"]
        assert "nemolaunch: error: no recommended quant" in result.stderr
    else:
        assert "--n-cpu-moe" not in plan["command"]
        assert plan["command"][0] == "llama-server"  # another machine's plan does not name this machine's build
        assert plan["forecast_bytes"] <= plan["budget_bytes"]


def test_ctrl_c_during_download_then_resume(hub: FakeHub, big_machine: Path, tmp_path: Path) -> None:
    """Ctrl-C mid-download: exit 130, one line, no partial file under a final name; the next run resumes."""
    import signal
    import time

    env = hub.env(tmp_path / "hf")
    hub.rate_bytes_per_s = 300_000  # ~2 s per shard: slow enough to interrupt half way
    process = subprocess.Popen(
        nemolaunch_argv("download", f"{REPO}:{SPLIT_QUANT}", "--hardware", str(big_machine)),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        preexec_fn=sigint_default,
    )  # fmt: skip
    blobs = tmp_path / "hf" / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(p.stat().st_size for p in blobs.glob("*.incomplete")) < 200_000:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1 and "run the same command again to resume" in errors[0]
    assert not list((tmp_path / "hf" / "hub").rglob("*-of-00003.gguf"))  # nothing under a final name
    on_disk = sum(p.stat().st_size for p in blobs.glob("*.incomplete"))
    assert on_disk > 0

    hub.rate_bytes_per_s = None
    hub.reset_counters()
    again = run_nemolaunch("download", f"{REPO}:{SPLIT_QUANT}", "--hardware", str(big_machine), "--json", env=env)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    total = sum(len(hub.repos[REPO].files[name]) for name in result["files"])
    assert result["fetched_bytes"] == total - on_disk  # only what was missing
    for name, local in result["files"].items():
        assert Path(local).read_bytes() == hub.repos[REPO].files[name]


def test_a_busy_port_is_reported_before_anything_is_planned_or_fetched(
    hub: FakeHub, big_machine: Path, tmp_path: Path, llama_bin_dir: Path
) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        result = run_nemolaunch(
            "serve", f"{REPO}:{SPLIT_QUANT}", "--port", str(busy), "--hardware", str(big_machine),
            "--llama-cpp", str(llama_bin_dir), env=hub.env(tmp_path / "hf"),
        )  # fmt: skip
    assert result.returncode == 4
    assert f"port {busy} on 127.0.0.1 is already in use" in result.stderr
    assert hub.requests == []  # not even a listing


def test_plan_reads_the_architecture_from_the_hub_without_the_weights(
    fake_hub: FakeHub, published: dict[str, bytes], big_machine: Path, tmp_path: Path
) -> None:
    """The forecast counts the KV cache and Mamba state from the header, fetched by a Range request."""
    # A 40 MB file whose header is the tiny model's: reading all of it would be noticed.
    whole = published["Q8_0/Tiny-Nemotron-Q8_0.gguf"] + bytes(40_000_000)
    fake_hub.add_repo("acme/Big-GGUF", {"Big-Q8_0.gguf": whole, "README.md": b"# big\n"})
    env = fake_hub.env(tmp_path / "hf")
    first = run_nemolaunch("plan", "acme/Big-GGUF", "--hardware", str(big_machine), "--json", env=env)
    assert first.returncode == 0, first.stderr
    plan = json.loads(first.stdout)
    # The tiny model: one attention layer with 1 KV head of 64+64 dims, f16, at its 4096-token context.
    assert plan["forecast"]["kv"] == 4096 * 1 * (64 + 64) * 2
    # One Mamba2 layer per slot (4 slots): (3 x (128 + 2 x 2 x 128) + 128 x 128) floats.
    assert plan["forecast"]["recurrent"] == 4 * (3 * (128 + 2 * 2 * 128) + 128 * 128) * 4
    assert plan["ctx_size"] == 4096  # the default, capped at the model's training context
    served = fake_hub.served("acme/Big-GGUF", "Big-Q8_0.gguf")
    assert 0 < served <= 8 * 1024 * 1024 < len(whole)
    assert len(fake_hub.gets_of("Big-Q8_0.gguf")) == 1
    assert not list((tmp_path / "hf" / "hub").rglob("*.gguf"))  # nothing went into the model cache

    fake_hub.reset_counters()
    again = run_nemolaunch("plan", "acme/Big-GGUF", "--hardware", str(big_machine), "--json", env=env)
    assert json.loads(again.stdout)["forecast"] == plan["forecast"]
    assert fake_hub.served("acme/Big-GGUF", "Big-Q8_0.gguf") == 0  # the header came from the cache


def test_a_header_past_the_first_look_is_read_on_without_fetching_a_byte_twice(
    fake_hub: FakeHub, big_machine: Path, tmp_path: Path
) -> None:
    """A 9 MB chat template puts the header's end past the first 8 MiB: the rest is asked for alone."""
    from gguf_headers import write_nemotron_gguf

    model = write_nemotron_gguf(tmp_path / "m.gguf", chat_template="x" * 9_000_000)
    whole = model.read_bytes() + bytes(30_000_000)  # weights the plan must not read
    fake_hub.add_repo("acme/Templated-GGUF", {"Templated-Q8_0.gguf": whole})
    env = fake_hub.env(tmp_path / "hf")
    remote = run_nemolaunch("plan", "acme/Templated-GGUF", "--hardware", str(big_machine), "--json", env=env)
    local = run_nemolaunch("plan", str(model), "--hardware", str(big_machine), "--json", env=env)
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
    from_header = itemgetter("kv", "recurrent")
    forecast = json.loads(remote.stdout)["forecast"]
    assert from_header(forecast) == from_header(json.loads(local.stdout)["forecast"])
    assert forecast["kv"] > 0
    # 8 MiB, then the next 8 MiB (up to 16): two ranges, every byte once.
    assert [get.range for get in fake_hub.gets_of("Templated-Q8_0.gguf")] == [
        f"bytes=0-{8 * 2**20 - 1}",
        f"bytes={8 * 2**20}-{16 * 2**20 - 1}",
    ]
    assert fake_hub.served("acme/Templated-GGUF", "Templated-Q8_0.gguf") == 16 * 2**20


def test_offline_local_dir_uses_what_is_there(hub: FakeHub, big_machine: Path, tmp_path: Path) -> None:
    env = hub.env(tmp_path / "hf")
    target = tmp_path / "models"
    fetched = run_nemolaunch(
        "download", f"{REPO}:Q8_0", "--local-dir", str(target), "--hardware", str(big_machine), env=env
    )
    assert fetched.returncode == 0, fetched.stderr
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    # Offline the quant list comes from the HF cache, which a --local-dir download does not fill:
    # the refusal says so in one line (listing a local dir as a catalog is left for later).
    again = run_nemolaunch(
        "download", f"{REPO}:Q8_0", "--local-dir", str(target), "--hardware", str(big_machine), env=offline
    )
    assert again.returncode == 3
    errors = [line for line in again.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert errors == [
        f"nemolaunch: error: HF_HUB_OFFLINE is set, and the HF cache holds no complete quant of {REPO} "
        "(cached: none): connect to the Hub to list and download it"
    ]
    # With the HF cache filled as well, offline --local-dir finds its own copy and fetches nothing.
    assert run_nemolaunch("download", f"{REPO}:Q8_0", "--hardware", str(big_machine), env=env).returncode == 0
    hub.reset_counters()
    cached = run_nemolaunch(
        "download", f"{REPO}:Q8_0", "--local-dir", str(target), "--hardware", str(big_machine), env=offline
    )
    assert cached.returncode == 0, cached.stderr
    assert cached.stdout.strip() == str(target / "Q8_0" / "Tiny-Nemotron-Q8_0.gguf")
    assert hub.requests == []


def test_rpc_worker_preload_downloads_the_quant_here_then_seeds_and_serves(
    hub: FakeHub, llama_bin_dir: Path, tmp_path: Path
) -> None:
    env = {**hub.env(tmp_path / "hf"), "LLAMA_CACHE": str(tmp_path / "llama-cache")}
    model = f"{REPO}:{SPLIT_QUANT}"
    base = ["rpc-worker", "--port", str(free_port()), "--llama-cpp", str(llama_bin_dir), "--preload", model]
    # A dry run says what it would do and downloads nothing.
    dry = run_nemolaunch(*base, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"--preload {model}: would download it here" in dry.stderr
    assert not (tmp_path / "hf" / "hub").exists() or not list((tmp_path / "hf" / "hub").rglob("*.gguf"))
    # For real: the quant is downloaded on this machine, its tensors seeded, then rpc-server runs.
    worker = subprocess.Popen(
        nemolaunch_argv(*base), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert worker.stderr is not None
        said = []
        for line in worker.stderr:
            said.append(line)
            if "tensor cache seeded" in line:
                break
        # The tiny model has no tensor over 10 MiB: nothing to write, and it says so.
        assert any("0 tensors over 10 MiB" in line for line in said), said
        assert list((tmp_path / "hf" / "hub").rglob(f"*{SPLIT_QUANT}-00003-of-00003.gguf"))
    finally:
        worker.kill()
        worker.wait(timeout=10)
