"""Runs every row of tests/error_catalog.py for real: the command, its exit code and its one line; and checks
that docs/errors.md is the table rendered from it."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import hostile_gguf
from test_build import fake_llama_cpp_tree

from conftest import (
    REPO_ROOT,
    cli_env,
    free_port,
    llama_cpp_shim,
    nemolaunch_argv,
    path_without,
    sigint_default,
    write_gguf,
)
from error_catalog import CASES, DOC, REPO, Case, render
from fakehub import API, FakeHub, Fault
from openai_stub import StubBehaviour, openai_stub
from test_launches import lookalike, write_fake_record
from test_smoke import process_alive, stop_with_sigint, wait_for_health

MACHINE = REPO_ROOT / "tests" / "fixtures" / "hardware" / "laptop_64gb.json"
CLUSTER = REPO_ROOT / "tests" / "fixtures" / "clusters" / "two_cpu_256gb.json"
SECRETS = ("hf_catalogsecret", "sk-catalog-secret", "pass-catalog-secret")


@dataclass
class Ctx:
    tmp: Path
    values: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)
    hub: FakeHub | None = None
    stub: StubBehaviour | None = None
    other_origin_saw: list[dict[str, str]] = field(default_factory=list)  # headers a redirect's target got

    def fill(self, text: str) -> str:
        for key, value in self.values.items():
            text = text.replace("{" + key + "}", value)
        return text


def _files(ctx: Ctx) -> None:
    tmp = ctx.tmp
    model = write_gguf(tmp / "model.gguf")
    (tmp / "text.gguf").write_text("hello, not a model\n")
    (tmp / "cut.gguf").write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    write_gguf(tmp / "m-00001-of-00002.gguf", **{"split.count": 2, "split.no": 0})
    (tmp / "empty").mkdir()
    (tmp / "not.json").write_text("not json\n")
    (tmp / "shape.json").write_text('{"os": 7}\n')
    (tmp / "empty-key").write_text("")
    (tmp / "crlf-key").write_bytes(b"sk-crlf\r\n")
    (tmp / "spaced-key").write_text("# a comment line, skipped as llama-server skips it\n  sk-spaced \n")
    (tmp / "open-key").write_text("sk-open\n")
    (tmp / "open-key").chmod(0o644)
    shim = llama_cpp_shim(tmp / "shim")
    (shim / "rpc-server").write_text("#!/bin/sh\nexit 1\n")
    (shim / "rpc-server").chmod(0o755)
    tree = fake_llama_cpp_tree(tmp / "tree")
    (tmp / "history.json").write_text('[{"role": "user", "content": "hi"}]')
    hostile_gguf.huge_array(tmp / "huge-array.gguf")
    hostile_gguf.long_string(tmp / "long-string.gguf")
    hostile_gguf.duplicate_key(tmp / "duplicate-key.gguf")
    (tmp / "broken.toml").write_text("port = [\n")
    (tmp / "typo.toml").write_text('colour = "blue"\n')
    (tmp / "bad-port.toml").write_text("port = 70000\n")
    (tmp / "latin1.toml").write_bytes(b"# caf\xe9\nport = 8001\n")
    (tmp / "port-true.toml").write_text("port = true\n")
    (tmp / "ctx-negative.toml").write_text("ctx_size = -5\n")
    os.mkfifo(tmp / "fifo")  # special files: a pipe nobody writes to, and a link that points at itself
    (tmp / "loop.json").symlink_to(tmp / "loop.json")
    (tmp / "big.json").write_bytes(b" " * (1024 * 1024 + 1))  # whitespace: valid JSON once, but past the cap
    cluster = json.loads(CLUSTER.read_text())
    cluster["workers"][0]["endpoint"] = "10.0.0.2:"
    (tmp / "bad-cluster.json").write_text(json.dumps(cluster))
    ctx.values.update(
        tmp=str(tmp), model=str(model), shim=str(shim), tree=str(tree), machine=str(MACHINE),
        small_machine=str(MACHINE), port=str(free_port()), serve_port=str(free_port()), cluster=str(CLUSTER),
    )  # fmt: skip


def _hub(ctx: Ctx, *, payload: int = 4096, rate: float | None = None) -> FakeHub:
    hub = ctx.stack.enter_context(FakeHub())
    model = write_gguf(ctx.tmp / "hub-model.gguf", padding="x" * payload)
    hub.add_repo(REPO, {"Q8_0/Small-Q8_0.gguf": model.read_bytes()})
    hub.add_repo("acme/Gated-GGUF", {"Q8_0/Gated-Q8_0.gguf": model.read_bytes()}, gated=True)
    hub.add_repo("acme/Evil-GGUF", {"Q8_0/Evil-Q8_0.gguf": (ctx.tmp / "huge-array.gguf").read_bytes()})
    hub.rate_bytes_per_s = rate
    ctx.env.update(hub.env(ctx.tmp / "hf"))
    ctx.values["hub"] = hub.url
    ctx.hub = hub
    return hub


@contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()}): disk-full row not run")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _setup(ctx: Ctx, name: str, request: pytest.FixtureRequest) -> None:
    _files(ctx)
    if name.startswith("hub"):
        big = name in ("hub-slow", "hub-disk-fills")
        hub = _hub(ctx, payload=4_000_000 if big else 4096, rate=1_000_000 if big else None)
        if name == "hub-corrupt":
            hub.add_fault(REPO, "Q8_0/Small-Q8_0.gguf", Fault(corrupt=True, times=None))
        if name in ("hub-small-disk", "hub-disk-fills"):
            # 2 GiB is the margin download keeps free: a folder just above it takes the download, then fills.
            size = "1m" if name == "hub-small-disk" else "2060m"
            ctx.values["small_disk"] = str(ctx.stack.enter_context(_tmpfs(ctx.tmp / "small", size)))
        if name == "hub-hostile":
            _hostile_repos(ctx, hub)
        if name == "hub-stale-headers":
            _stale_header_folders(ctx)
    elif name == "small-disk":
        ctx.values["small_disk"] = str(ctx.stack.enter_context(_tmpfs(ctx.tmp / "small", "1m")))
    elif name in ("no-nvcc", "no-cmake", "no-npm"):
        ctx.env["PATH"] = path_without(ctx.tmp, name.removeprefix("no-"))
        ctx.env["CUDA_HOME"] = str(ctx.tmp / "no-cuda")  # the script also looks for $CUDA_HOME/bin/nvcc
    elif name in ("broken-tree", "slow-tree"):
        tree = fake_llama_cpp_tree(ctx.tmp / name, broken=name == "broken-tree")
        ctx.values["broken"] = str(tree)
        if name == "slow-tree":
            (tree / "slow.sh").write_text(f"echo $$ > {ctx.tmp}/compiler.pid\nexec sleep 120\n")
            with (tree / "CMakeLists.txt").open("a") as cmake:
                cmake.write("add_custom_target(slow ALL COMMAND sh ${CMAKE_SOURCE_DIR}/slow.sh)\n")
                cmake.write("add_dependencies(llama-server slow)\n")
            ctx.values["tree"] = str(tree)
    elif name == "redirect-pair":
        from test_redirect_keeps_key import redirecting_servers

        url, _, ctx.other_origin_saw = ctx.stack.enter_context(redirecting_servers())
        ctx.values["redirect_url"] = url
    elif name == "busy-port":
        holder = ctx.stack.enter_context(socket.socket())
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        ctx.values["busy_port"] = str(holder.getsockname()[1])
    elif name == "no-llama-cpp":
        ctx.env.update(XDG_DATA_HOME=str(ctx.tmp / "data"), PATH=path_without(ctx.tmp, "llama-server"))
    elif name == "tiny":
        from nemolaunch.tiny_model import write_tiny_model

        ctx.values["tiny"] = str(write_tiny_model(ctx.tmp / "tiny.gguf"))
    elif name == "real-server":
        from nemolaunch.tiny_model import write_tiny_model

        ctx.values.update(
            tiny=str(write_tiny_model(ctx.tmp / "tiny.gguf")), real=str(request.getfixturevalue("llama_bin_dir"))
        )
    elif name == "launches":
        _launches(ctx)
    elif name.startswith("stub"):
        behaviour = StubBehaviour(endless=name == "stub-endless", api_key="sk-right" if name == "stub-key" else None)
        url, ctx.stub = ctx.stack.enter_context(openai_stub(behaviour))
        ctx.values["url"] = url


def _hostile_repos(ctx: Ctx, hub: FakeHub) -> None:
    """Listings no honest Hub sends, and a CDN whose answers disagree with the listing or themselves.

    Each repo's bytes differ (the CDN finds a file by its sha256, so a fault must name one repo's file)."""

    def model(tag: str, payload: int = 4096) -> bytes:
        return write_gguf(ctx.tmp / f"hostile-{tag}.gguf", padding=tag[0] * payload).read_bytes()

    hub.add_repo("acme/Dots-GGUF", {"Q8_0/../../Dots-Q8_0.gguf": model("dots")})
    hub.add_repo("acme/Abs-GGUF", {"/Q8_0/Abs-Q8_0.gguf": model("abs")})
    hub.add_repo("acme/Long-GGUF", {"Q8_0/" + "L" * 300 + "-Q8_0.gguf": model("long")})
    hub.add_repo("acme/Empty-GGUF", {"Q8_0/Empty-Q8_0.gguf": b""})
    size = model("size")
    listed = {"Q8_0/Size-Q8_0.gguf": len(size) + 1000}
    hub.add_repo("acme/Size-GGUF", {"Q8_0/Size-Q8_0.gguf": size}, declared_sizes=listed)
    length = "Q8_0/Length-Q8_0.gguf"
    hub.add_repo("acme/Length-GGUF", {length: model("zlength", payload=400_000)})
    # The download's first GET (no Range) drops after 100 kB; its resumed GET then gets a Content-Length 7 bytes
    # longer than its Content-Range. The plan's header read (a range from byte 0) meets neither.
    hub.add_fault("acme/Length-GGUF", length, Fault(drop_after=100_000, on="whole"))
    hub.add_fault("acme/Length-GGUF", length, Fault(length_off_by=7, on="resumed", times=None))
    # A CDN that sends a header one byte a second, and a Hub that sends its listing so: no read timeout trips.
    hub.add_repo("acme/Trickle-GGUF", {"Q8_0/Trickle-Q8_0.gguf": model("trickle")})
    hub.add_fault("acme/Trickle-GGUF", "Q8_0/Trickle-Q8_0.gguf", Fault(trickle_s=1.0, times=None))
    hub.add_repo("acme/SlowList-GGUF", {"Q8_0/SlowList-Q8_0.gguf": model("slowlist")})
    hub.add_fault("acme/SlowList-GGUF", API, Fault(trickle_s=1.0, times=None))


def _stale_header_folders(ctx: Ctx) -> None:
    """Header folders as runs leave them in TMPDIR: a killed run's (its pid gone), an older nemolaunch's (no pid,
    an hour old), a running run's (its pid alive) and an older nemolaunch's made just now."""
    scratch = ctx.tmp / "scratch"
    scratch.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    running = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)
    ctx.stack.callback(lambda: (running.kill(), running.wait(timeout=10)))
    time.sleep(0.05)  # made after its owner started, as a run makes it
    folders = {
        "killed": scratch / f"nemolaunch-header-{gone.pid}-abc123",
        "old": scratch / "nemolaunch-header-q1w2e3",
        "running": scratch / f"nemolaunch-header-{running.pid}-def456",
        "recent": scratch / "nemolaunch-header-r4t5y6",
    }
    for folder in folders.values():
        folder.mkdir()
        with (folder / "head.gguf").open("wb") as handle:
            handle.truncate(10**9)  # sparse, as the real ones are: the model's full size
    an_hour_ago = time.time() - 3600
    os.utime(folders["old"], (an_hour_ago, an_hour_ago))
    ctx.values.update({f"folder_{key}": str(path) for key, path in folders.items()})


def _launches(ctx: Ctx) -> None:
    """Two processes that look like llama-servers (their argv[0] is one's path), recorded as launches under
    the alias "twin", and one plain `sleep` that is no launch; all killed at the end of the case."""
    state = ctx.tmp / "state"
    ctx.env["XDG_STATE_HOME"] = str(state)
    ports = [free_port(), free_port()]
    for port in ports:
        process = ctx.stack.enter_context(lookalike(ctx.tmp / f"fake-{port}"))
        write_fake_record(state, process.pid, argv=[str(ctx.tmp / f"fake-{port}" / "bin" / "llama-server")],
                          port=port, alias="twin")  # fmt: skip
    other = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)
    ctx.stack.callback(lambda: (other.kill(), other.wait(timeout=10)))
    ctx.values.update(launch_port=str(ports[0]), other_pid=str(other.pid))


def _pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".+?".join(re.escape(part) for part in expected.split("{*}")))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_catalog_row(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    _run_row(case, tmp_path, request)


#: One Ctrl-C row whose SIGINT the test itself hands back (chat, through sigint_default), one that only
#: nemolaunch's exec can hand back (llama-server caught before its own handler is set).
CTRL_C_ROWS = [case for case in CASES if case.id in ("chat-ctrl-c", "serve-ctrl-c-loading")]


@pytest.mark.parametrize("case", CTRL_C_ROWS, ids=[case.id for case in CTRL_C_ROWS])
def test_a_ctrl_c_row_holds_under_a_parent_that_ignores_sigint(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """As under `nohup ... &` or `( ... ) &`: this process ignores SIGINT, and every child inherits that."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _run_row(case, tmp_path, request)
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_row(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    ctx = Ctx(tmp=tmp_path)
    with ctx.stack:
        _setup(ctx, case.setup, request)
        env = cli_env(**ctx.env, **{key: ctx.fill(value) for key, value in case.env.items()})
        args = [ctx.fill(arg) for arg in case.args]
        if case.check in CHECKS:
            returncode, stdout, stderr = CHECKS[case.check](ctx, args, env)
        else:
            done = subprocess.run(
                nemolaunch_argv(*args), input=case.stdin, capture_output=True, text=True, env=env, timeout=180
            )
            returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
        expected_code = -signal.SIGINT if case.check == "ctrl-c-loading" else case.code
        assert returncode == expected_code, stderr[-3000:]
        assert "Traceback" not in stderr
        if case.message:
            expected = _pattern(ctx.fill(case.message))
            assert any(expected.fullmatch(line) for line in stderr.splitlines()), stderr[-3000:]
        if case.code != 0:
            assert sum(line.startswith("nemolaunch: error:") for line in stderr.splitlines()) <= 1
        for secret in SECRETS:
            assert secret not in stdout + stderr


def _interrupt_when(args: list[str], env: dict[str, str], ready, *, after_s: float = 0.3) -> tuple[int, str, str]:
    """Start the command, send Ctrl-C (SIGINT) once ``ready()`` holds, and collect what it printed."""
    process = subprocess.Popen(
        nemolaunch_argv(*args), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=sigint_default,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not ready() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert ready(), f"never ready: {process.poll()}"
        time.sleep(after_s)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stdout, stderr


def _partial_bytes(folder: Path) -> int:
    # Every file: huggingface_hub's partial files are named by hash, not by the shard.
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _check_ctrl_c_build(ctx: Ctx, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    pid_file = ctx.tmp / "compiler.pid"
    result = _interrupt_when(args, env, pid_file.exists, after_s=0.2)
    sleeper = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while process_alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(sleeper), "a build step outlived Ctrl-C"
    assert not (ctx.tmp / "p" / "build-stamp.txt").exists()
    return result


def _check_ctrl_c_download(ctx: Ctx, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    return _interrupt_when(args, env, lambda: _partial_bytes(ctx.tmp / "hf") > 200_000)


def _check_fill_disk(ctx: Ctx, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    disk = Path(ctx.values["small_disk"])
    process = subprocess.Popen(
        nemolaunch_argv(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while _partial_bytes(disk) < 100_000 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    _take_the_rest(disk)  # another program takes the rest of the disk while the shard is on its way
    stdout, stderr = process.communicate(timeout=60)
    (disk / "filler").unlink()
    return process.returncode, stdout, stderr


def _take_the_rest(disk: Path) -> None:
    """Fill ``disk`` to its last block. One fallocate of "what is free" fails whole (ENOSPC) when the
    download writes a little between the look and the call, and then fills nothing: halve and go on."""
    with (disk / "filler").open("ab") as handle:
        want = 0
        for _ in range(200):
            stat = os.statvfs(disk)
            free = stat.f_bavail * stat.f_frsize
            if free < stat.f_frsize:
                return
            want = free if want == 0 or want > free else want
            try:
                os.posix_fallocate(handle.fileno(), os.fstat(handle.fileno()).st_size, want)
                want = 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                want = max(want // 2, stat.f_frsize)
    raise AssertionError(f"could not fill {disk}: {os.statvfs(disk).f_bavail} blocks still free")


def _check_ctrl_c_chat(ctx: Ctx, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    assert ctx.stub is not None
    result = _interrupt_when(args, env, lambda: bool(ctx.stub.requests))
    assert ctx.stub.disconnected.wait(timeout=10), "the answer's stream stayed open after Ctrl-C"
    return result


def _check_ctrl_c_loading(ctx: Ctx, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Catch llama-server between exec and its SIGINT handler (set once the model is loaded): stop it
    there, send Ctrl-C, let it go on. It dies of the signal, as a person's Ctrl-C would make it."""
    real = Path(ctx.values["real"]) / "llama-server"
    for _ in range(5):
        process = subprocess.Popen(
            nemolaunch_argv(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        while process.poll() is None:
            try:
                if Path(f"/proc/{process.pid}/exe").resolve() == real.resolve():
                    break
            except OSError:
                pass
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGSTOP)
        caught = int(re.search(r"SigCgt:\s*(\w+)", Path(f"/proc/{process.pid}/status").read_text())[1], 16)
        if caught & (1 << (signal.SIGINT - 1)):
            os.kill(process.pid, signal.SIGCONT)
            stop_with_sigint(process)  # loaded already: try again
            continue
        os.kill(process.pid, signal.SIGINT)
        os.kill(process.pid, signal.SIGCONT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()  # it shrugged the Ctrl-C off: fail, but leave no server behind
            output, _ = process.communicate(timeout=10)
            pytest.fail(f"llama-server outlived Ctrl-C while loading:\n{output[-2000:]}")
        port = int(ctx.values["port"])
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens on the port
        return process.returncode, "", output
    pytest.fail("llama-server loaded the model before it could be stopped, five times")


def _check_key_hidden(ctx: Ctx, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """The key is nowhere in the dry run's output, nor in the launched llama-server's argv (/proc/PID/cmdline)."""
    dry = subprocess.run(nemolaunch_argv(*args), capture_output=True, text=True, env=env, timeout=60)
    from nemolaunch.tiny_model import write_tiny_model

    tiny = write_tiny_model(ctx.tmp / "tiny.gguf")
    real = str(Path(os.environ.get("NEMOLAUNCH_TEST_LLAMA_CPP", "")) or "")
    if not real or not Path(real, "llama-server").exists():
        return dry.returncode, dry.stdout, dry.stderr  # the launch half needs a real build (scripts/test.sh has one)
    port = free_port()
    server = subprocess.Popen(
        nemolaunch_argv("serve", str(tiny), "--port", str(port), "--llama-cpp", real, "--", "--threads", "1"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for_health(port, server)
        assert b"sk-catalog-secret" not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
    finally:
        stop_with_sigint(server)
    output = server.stdout.read() if server.stdout else ""
    return dry.returncode, dry.stdout, dry.stderr + output


def _check_token_hidden(ctx: Ctx, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """HF_TOKEN is used (the Hub sees it) but never printed; serve's command for the download holds no token."""
    done = subprocess.run(nemolaunch_argv(*args), capture_output=True, text=True, env=env, timeout=120)
    assert ctx.hub is not None
    serve = subprocess.run(
        nemolaunch_argv("serve", f"{REPO}:Q8_0", "--llama-cpp", ctx.values["shim"], "--hardware", str(MACHINE),
                        "--dry-run", "--json"),
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert serve.returncode == 0, serve.stderr
    return done.returncode, done.stdout + serve.stdout, done.stderr + serve.stderr


def _check_other_alive(ctx: Ctx, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    done = subprocess.run(nemolaunch_argv(*args), capture_output=True, text=True, env=env, timeout=60)
    assert process_alive(int(ctx.values["other_pid"])), "stop signalled a process nemolaunch did not launch"
    return done.returncode, done.stdout, done.stderr


def _check_nothing_fetched(ctx: Ctx, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """A refused listing: no request for any file's bytes or metadata, and nothing made in the cache."""
    done = subprocess.run(nemolaunch_argv(*args), capture_output=True, text=True, env=env, timeout=60)
    assert ctx.hub is not None
    assert not [record.path for record in ctx.hub.requests if record.file or "/resolve/" in record.path]
    hub_cache = ctx.tmp / "hf" / "hub"
    assert not [path for path in hub_cache.rglob("*") if not path.is_dir()], "the refused listing left files"
    return done.returncode, done.stdout, done.stderr


def _check_no_partial_file(ctx: Ctx, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    done = subprocess.run(nemolaunch_argv(*args), capture_output=True, text=True, env=env, timeout=60)
    left = [path for path in (ctx.tmp / "hf" / "hub").rglob("*") if ".incomplete" in path.name]
    assert not left, f"a partial file of a file no download can finish was kept: {left}"
    return done.returncode, done.stdout, done.stderr


def _check_key_kept(ctx: Ctx, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """The redirect's other origin was never asked anything: no key can have reached it."""
    done = subprocess.run(nemolaunch_argv(*args), capture_output=True, text=True, env=env, timeout=60)
    assert ctx.other_origin_saw == [], f"a keyed request followed the redirect: {ctx.other_origin_saw}"
    assert env["NEMOLAUNCH_API_KEY"] not in done.stdout + done.stderr
    return done.returncode, done.stdout, done.stderr


def _check_deadline(ctx: Ctx, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """A trickling answer: the run ends within the 10 s the catalog allows any hostile answer (its deadline
    is 3 s; this is a guard against a hang, not a speed test), and leaves no header folder in TMPDIR."""
    scratch = Path(env["TMPDIR"])
    scratch.mkdir(exist_ok=True)
    done = subprocess.run(nemolaunch_argv(*args), capture_output=True, text=True, env=env, timeout=10)
    assert not list(scratch.iterdir()), f"the refused run left {list(scratch.iterdir())} in TMPDIR"
    return done.returncode, done.stdout, done.stderr


def _check_stale_headers(ctx: Ctx, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    done = subprocess.run(nemolaunch_argv(*args), capture_output=True, text=True, env=env, timeout=60)
    folder = {key: Path(ctx.values[f"folder_{key}"]) for key in ("killed", "old", "running", "recent")}
    assert not folder["killed"].exists() and not folder["old"].exists(), "a killed run's header folder stayed"
    assert folder["running"].exists() and folder["recent"].exists(), "a running run's header folder was removed"
    # And the run's own folder went with it: only the two kept are left.
    assert sorted(path.name for path in (ctx.tmp / "scratch").iterdir()) == sorted(
        (folder["running"].name, folder["recent"].name)
    )
    return done.returncode, done.stdout, done.stderr


CHECKS = {
    "nothing-fetched": _check_nothing_fetched,
    "no-partial-file": _check_no_partial_file,
    "stale-headers": _check_stale_headers,
    "deadline": _check_deadline,
    "key-kept": _check_key_kept,
    "other-alive": _check_other_alive,
    "ctrl-c-build": _check_ctrl_c_build,
    "ctrl-c-download": _check_ctrl_c_download,
    "fill-disk": _check_fill_disk,
    "ctrl-c-chat": _check_ctrl_c_chat,
    "ctrl-c-loading": _check_ctrl_c_loading,
    "key-hidden": _check_key_hidden,
    "token-hidden": _check_token_hidden,
}


def test_the_catalog_has_forty_rows_across_every_command() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)
    assert {case.verb for case in CASES} >= {"build", "plan", "download", "serve", "run", "chat", "rpc-worker"}
    assert all(case.check is None or case.check in CHECKS for case in CASES)


def test_docs_errors_md_is_the_rendered_catalog() -> None:
    assert DOC.read_text() == render(), "docs/errors.md is stale: run `python tests/error_catalog.py --write`"
