"""scripts/build_llamacpp.sh and `nemolaunch build`: refusals, idempotence, binary discovery."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from nemolaunch.adapters.builder import BuildRequest, script_argv, source_key
from nemolaunch.adapters.llamacpp import Build, best_build, find_binary, parse_version
from nemolaunch.errors import LlamaCppDirInvalid, LlamaCppNotFound

from conftest import REPO_ROOT, cli_env, path_without, run_nemolaunch, sigint_default

SCRIPT = REPO_ROOT / "scripts" / "build_llamacpp.sh"


def test_path_without_keeps_cmake_where_path_finds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine whose cmake comes from `pip install cmake`: a venv bin/ holding cmake and more."""
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    for name in ("cmake", "ninja", "python3", "g++"):
        (venv_bin / name).write_text("#!/bin/sh\n")
        (venv_bin / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")

    path = path_without(tmp_path, "c++", "g++", "clang++")

    assert Path(shutil.which("cmake", path=path) or "").resolve() == (venv_bin / "cmake").resolve()
    assert Path(shutil.which("ninja", path=path) or "").resolve() == (venv_bin / "ninja").resolve()
    assert all(shutil.which(name, path=path) is None for name in ("c++", "g++", "clang++"))


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (.ci/run installs it)")
    scripts = [*sorted(str(path) for path in (REPO_ROOT / "scripts").glob("*.sh")), str(REPO_ROOT / ".ci" / "run")]
    result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_installed_script_is_the_repository_script() -> None:
    from nemolaunch.adapters.builder import script_path

    assert script_path().read_bytes() == SCRIPT.read_bytes()


def test_missing_cmake(tmp_path: Path) -> None:
    env = {"PATH": path_without(tmp_path, "cmake"), "HOME": str(tmp_path)}
    result = run_script("--backend", "cpu", "--prefix", str(tmp_path / "p"), "--source", str(tmp_path), env=env)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1].startswith("build_llamacpp: error: cmake not found: install")


def test_missing_compiler(tmp_path: Path) -> None:
    env = {"PATH": path_without(tmp_path, "c++", "g++", "clang++"), "HOME": str(tmp_path)}
    result = run_script("--backend", "cpu", "--prefix", str(tmp_path / "p"), env=env)
    assert result.returncode == 3
    assert "no C++ compiler found" in result.stderr


def test_cuda_without_nvcc_through_the_cli(tmp_path: Path) -> None:
    env = cli_env(PATH=path_without(tmp_path, "nvcc") + ":" + str(Path(os.sys.executable).parent))
    env["CUDA_HOME"] = str(tmp_path / "no-cuda")
    result = run_nemolaunch("build", "--backend", "cuda", "--prefix", str(tmp_path / "p"), env=env)
    assert result.returncode == 4
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--backend cuda needs nvcc: install the CUDA toolkit" in errors[0]
    assert not (tmp_path / "p" / "bin").exists()


def test_source_without_llama_cpp(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "README").write_text("not llama.cpp")
    result = run_nemolaunch("build", "--backend", "cpu", "--source", str(junk), "--prefix", str(tmp_path / "p"))
    assert result.returncode == 2
    assert "holds no llama.cpp tree" in result.stderr
    assert not (tmp_path / "p").exists()  # a refused build leaves no empty build folder
    assert "Full log" not in result.stderr  # nor names a log that is not there
    archive = tmp_path / "junk.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(junk, arcname="junk")
    result = run_nemolaunch("build", "--backend", "cpu", "--source", str(archive), "--prefix", str(tmp_path / "q"))
    assert result.returncode == 2
    assert "holds no llama.cpp tree" in result.stderr
    missing = run_nemolaunch("build", "--source", str(tmp_path / "absent"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_bad_backend_and_jobs(tmp_path: Path) -> None:
    assert run_nemolaunch("build", "--backend", "rocm").returncode == 2
    if sys.platform != "darwin":
        metal = run_nemolaunch("build", "--backend", "metal", "--prefix", str(tmp_path / "m"))
        assert metal.returncode == 2 and "Metal builds need macOS" in metal.stderr
        assert not (tmp_path / "m").exists()
    both = run_nemolaunch("build", "--source", str(tmp_path), "--ref", "b1234")
    assert both.returncode == 2 and "with --source, leave it out" in both.stderr
    result = run_script("--backend", "cpu", "--jobs", "0", "--prefix", str(tmp_path), env=dict(os.environ))
    assert result.returncode == 2 and "--jobs must be a positive whole number" in result.stderr


def _build_under_test(llama_bin_dir: Path) -> tuple[str, str | None] | None:
    """The backend and CUDA targets the build under test was made with, from its stamp (None: no stamp)."""
    from nemolaunch.adapters.llamacpp import read_stamp

    stamp = read_stamp(llama_bin_dir.parent)
    if stamp is None:
        return None
    text = (llama_bin_dir.parent / "build-stamp.txt").read_text()
    arch = next(
        (word.split("=", 1)[1] for word in text.split() if word.startswith("-DCMAKE_CUDA_ARCHITECTURES=")), None
    )
    return stamp.backend, arch


def test_rebuilding_the_same_source_is_a_no_op(llama_bin_dir: Path) -> None:
    source = os.environ.get("NEMOLAUNCH_TEST_LLAMA_CPP_SOURCE")
    if not source:
        pytest.skip("NEMOLAUNCH_TEST_LLAMA_CPP_SOURCE is set by scripts/test.sh")
    made_with = _build_under_test(llama_bin_dir)
    if made_with is None:
        pytest.skip(f"{llama_bin_dir} is not one of nemolaunch's builds (no build-stamp.txt)")
    # The same backend and targets the build was made with (a CUDA build on a GPU machine too): asked
    # for anything else, the build would rightly be redone, over the build the other tests use.
    backend, arch = made_with
    before = {p.name: p.stat().st_mtime_ns for p in llama_bin_dir.iterdir()}
    started = time.monotonic()
    result = run_nemolaunch(
        "build", "--backend", backend, *(["--cuda-arch", arch] if arch else []), "--source", source,
        "--prefix", str(llama_bin_dir.parent),
        timeout=600,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "already up to date" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in llama_bin_dir.iterdir()} == before
    print(f"no-op rebuild took {elapsed:.2f}s")  # reported, not asserted: timing belongs to benchmarks
    stamp = (llama_bin_dir.parent / "build-stamp.txt").read_text()
    assert f"backend={backend}" in stamp and "-DGGML_RPC=ON" in stamp and "compiler=" in stamp


def test_script_argv_and_source_key(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"one")
    request = BuildRequest(backend="cpu", source=archive, ref=None, jobs=2, prefix=tmp_path / "p")
    assert script_argv(request, script=Path("/s.sh")) == [
        "bash", "/s.sh", "--backend", "cpu", "--prefix", str(tmp_path / "p"), "--web-ui", "off",
        "--source", str(archive), "--jobs", "2",
    ]  # fmt: skip
    first = source_key(archive, None)
    archive.write_bytes(b"two")
    assert source_key(archive, None) != first  # keyed by the archive's content
    assert source_key(None, "b1234") != source_key(None, "b1235")


def _fake_build(root: Path, name: str, backend: str, built_at: float) -> Build:
    prefix = root / name
    (prefix / "bin").mkdir(parents=True)
    server = prefix / "bin" / "llama-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    return Build(prefix=prefix, backend=backend, source="s", built_at=built_at)


def test_discovery_order(tmp_path: Path) -> None:
    old_cpu = _fake_build(tmp_path, "cpu-old", "cpu", 1.0)
    new_cpu = _fake_build(tmp_path, "cpu-new", "cpu", 2.0)
    cuda = _fake_build(tmp_path, "cuda-a", "cuda", 0.5)
    builds = [old_cpu, new_cpu, cuda]
    assert best_build(builds, binary="llama-server", suitable=("cpu",)) == new_cpu
    assert best_build(builds, binary="llama-server", suitable=("cuda", "cpu")) == cuda
    assert best_build(builds, binary="llama-cli", suitable=("cpu",)) is None

    found = find_binary("llama-server", env={"PATH": ""}, builds=builds, suitable=("cpu",))
    assert found.path == new_cpu.bin_dir / "llama-server" and found.origin == "nemolaunch build"
    explicit = find_binary("llama-server", explicit_dir=cuda.prefix, env={}, builds=builds)
    assert explicit.path == cuda.bin_dir / "llama-server" and explicit.origin == "--llama-cpp"
    by_env = find_binary("llama-server", env={"NEMOLAUNCH_LLAMA_CPP": str(old_cpu.bin_dir)}, builds=builds)
    assert by_env.path == old_cpu.bin_dir / "llama-server"
    with pytest.raises(LlamaCppDirInvalid):
        find_binary("llama-server", explicit_dir=tmp_path, env={}, builds=builds)
    on_path = find_binary("llama-server", env={"PATH": str(old_cpu.bin_dir)}, builds=[], suitable=("cpu",))
    assert on_path.origin == "PATH"
    with pytest.raises(LlamaCppNotFound):
        find_binary("llama-server", env={"PATH": str(tmp_path)}, builds=[], suitable=("cpu",))


def test_parse_version_both_formats() -> None:
    new = parse_version("version: 0.5.0-dev (build 1, commit 0c1e570)\nbuilt with GNU 12.2.0 for Linux x86_64\n")
    assert (new.number, new.commit) == ("0.5.0-dev", "0c1e570")
    assert new.built_with == "built with GNU 12.2.0 for Linux x86_64"
    assert new.label() == "version 0.5.0-dev (0c1e570)"
    old = parse_version("ggml_cuda_init: found 1 CUDA devices\nversion: 6543 (a1b2c3d)\nbuilt with cc\n")
    assert (old.number, old.commit) == ("6543", "a1b2c3d")


def test_parse_version_of_a_tree_without_git_metadata() -> None:
    """The version line of an sdist tree's build (issue 9, an H200 machine), after the lines CUDA builds print first."""
    version = parse_version(
        "ggml_cuda_init: found 1 CUDA devices:\n  Device 0: NVIDIA H200, compute capability 9.0, VMM: yes\n"
        "version: 0.5.0-dev (build 0, commit unknown)\nbuilt with GNU 12.2.0 for Linux x86_64\n"
    )
    assert (version.number, version.commit) == ("0.5.0-dev", None)
    assert version.label() == "version 0.5.0-dev (commit unknown)"
    assert parse_version("").label() == "version unknown"
    assert parse_version("no answer (timed out)").label() == "version unknown (no answer (timed out))"


def fake_llama_cpp_tree(root: Path, *, broken: bool = False, cmake_error: str | None = None) -> Path:
    """A CMake project shaped like llama.cpp that builds four tiny programs in seconds.

    It runs the script's whole path (configure, build the named targets, copy, stamp)
    with the real cmake and compiler, without the 8-minute llama.cpp build.
    ``cmake_error`` makes its configure step fail with that text, as llama.cpp's CMake words it.
    """
    (root / "include").mkdir(parents=True)
    (root / "include" / "llama.h").write_text("/* marker */\n")
    (root / "tools" / "server").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src" / "main.cpp").write_text('#include <cstdio>\nint main() { std::puts("version: 1 (abcdef0)"); }\n')
    names = ("llama-server", "llama-cli", "llama-gguf-split", "ggml-rpc-server")
    targets = "\n".join(f"add_executable({name} src/main.cpp)" for name in names)
    (root / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.14)\nproject(fake CXX)\n"
        + ('message(FATAL_ERROR "this tree is broken on purpose")\n' if broken else "")
        + (f"message(FATAL_ERROR [=[{cmake_error}]=])\n" if cmake_error else "")
        + "set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)\n"
        + targets
        + "\n"
    )
    return root


def test_build_stamps_progress_and_idempotence_on_a_small_tree(tmp_path: Path) -> None:
    from nemolaunch.adapters.builder import run_build

    tree = fake_llama_cpp_tree(tmp_path / "src")
    request = BuildRequest(backend="cpu", source=tree, ref=None, jobs=2, prefix=tmp_path / "prefix")
    seen: list[int] = []
    first = run_build(request, on_progress=lambda percent, line: seen.append(percent))
    assert not first.up_to_date
    assert seen and seen[-1] == 100 and seen == sorted(seen)
    for name in ("llama-server", "llama-cli", "llama-gguf-split", "ggml-rpc-server", "rpc-server"):
        assert os.access(first.bin_dir / name, os.X_OK)
    assert "Building CXX object" in first.log.read_text()
    stamp = (request.prefix / "build-stamp.txt").read_text()
    assert "backend=cpu" in stamp and "source=dir:" in stamp

    binary_mtime = (first.bin_dir / "llama-server").stat().st_mtime_ns
    assert run_build(request).up_to_date
    assert (first.bin_dir / "llama-server").stat().st_mtime_ns == binary_mtime

    # An edited source is a different build: the stamp no longer matches.
    (tree / "src" / "main.cpp").write_text('#include <cstdio>\nint main() { std::puts("version: 2 (abcdef1)"); }\n')
    assert not run_build(request).up_to_date
    assert subprocess.run([first.bin_dir / "llama-server"], capture_output=True, text=True).stdout.startswith(
        "version: 2"
    )


def test_a_failing_build_shows_the_log_tail_and_exits_5(tmp_path: Path) -> None:
    tree = fake_llama_cpp_tree(tmp_path / "src", broken=True)
    prefix = tmp_path / "prefix"
    result = run_nemolaunch("build", "--backend", "cpu", "--source", str(tree), "--prefix", str(prefix))
    assert result.returncode == 5
    assert "this tree is broken on purpose" in result.stderr  # the log's last lines
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert errors == [f"nemolaunch: error: building llama.cpp failed (exit 5): the full log is {prefix}/build.log"]
    assert not (prefix / "build-stamp.txt").exists()
    assert not (prefix / "bin").exists()


def test_interrupting_a_build_stops_every_process_under_it(tmp_path: Path) -> None:
    """Ctrl-C during `nemolaunch build`: no compiler (or anything else it started) is left running."""
    import signal

    tree = fake_llama_cpp_tree(tmp_path / "src")
    # A compile step that takes long enough to be interrupted, and records its pid.
    pid_file = tmp_path / "compiler.pid"
    (tree / "slow.sh").write_text(f"echo $$ > {pid_file}\nexec sleep 120\n")
    (tree / "CMakeLists.txt").write_text(
        (tree / "CMakeLists.txt").read_text()
        + "add_custom_target(slow ALL COMMAND sh ${CMAKE_SOURCE_DIR}/slow.sh)\n"
        + "add_dependencies(llama-server slow)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "nemolaunch", "build", "--backend", "cpu", "--source", str(tree),
         "--prefix", str(tmp_path / "prefix")],
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid_file.exists(), "the slow step never started"
    time.sleep(0.2)
    sleeper = int(pid_file.read_text())
    assert Path(f"/proc/{sleeper}").exists()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    deadline = time.monotonic() + 10
    while Path(f"/proc/{sleeper}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{sleeper}").exists(), "a build step outlived Ctrl-C"
    assert not (tmp_path / "prefix" / "build-stamp.txt").exists()


# --- CUDA: GPU targets and the toolkit's gaps ------------------------------------------------------------
# What llama.cpp 0c1e570's CMake printed on this machine (nvcc 13.0, no cuBLAS, no GPU) for --backend cuda.
NO_GPU_FOR_NATIVE = (
    "CMake Error in ggml/src/ggml-cuda/CMakeLists.txt:\n"
    '  CUDA_ARCHITECTURES is set to "native", but no GPU was detected.'
)
NO_CUBLAS = (
    '-- Unable to find cublas_v2.h in either "/usr/local/cuda-13.0/include" or "/usr/math_libs/include"\n'
    "CMake Error at ggml/src/ggml-cuda/CMakeLists.txt:178 (target_link_libraries):\n"
    '  Target "ggml-cuda" links to:\n\n    CUDA::cublas\n\n  but the target was not found.'
)


def fake_nvcc_path(tmp_path: Path) -> str:
    """PATH with an nvcc that only tells its version: enough for the script to take the CUDA road."""
    shims = tmp_path / "nvcc-bin"
    shims.mkdir()
    nvcc = shims / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
    nvcc.chmod(0o755)
    return f"{shims}:{os.environ['PATH']}"


def test_cuda_arch_goes_to_cmake_and_into_the_build_key(tmp_path: Path) -> None:
    tree = fake_llama_cpp_tree(tmp_path / "src")
    env = cli_env(PATH=fake_nvcc_path(tmp_path))
    prefix = tmp_path / "prefix"

    # Naming a GPU target asks for a CUDA build even where no GPU is visible (a container build).
    result = run_nemolaunch("build", "--cuda-arch", "90,100", "--source", str(tree), "--prefix", str(prefix), env=env)

    assert result.returncode == 0, result.stderr
    assert f"Full log: {prefix}/build.log" in result.stderr  # named once compiling started
    stamp = (prefix / "build-stamp.txt").read_text()
    assert "backend=cuda" in stamp and "-DCMAKE_CUDA_ARCHITECTURES=90;100" in stamp
    assert "release 13.0" in stamp  # nvcc's version is part of the key: a new toolkit rebuilds
    request = BuildRequest(backend="cuda", source=tree, ref=None, jobs=None, prefix=prefix, cuda_arch="90;100")
    assert script_argv(request, script=Path("/s.sh"))[-2:] == ["--cuda-arch", "90;100"]
    from nemolaunch.adapters.builder import build_prefix

    keys = {
        build_prefix(tmp_path, backend="cuda", source=tree, ref=None, cuda_arch=arch) for arch in (None, "90", "100")
    }
    assert len(keys) == 3 and build_prefix(
        tmp_path, backend="cuda", source=tree, ref=None, cuda_arch="90;100"
    ).name.startswith("cuda-sm90_100-")


def test_bad_cuda_arch(tmp_path: Path) -> None:
    for argv, hint in (
        (["--backend", "cpu", "--cuda-arch", "90"], "it is for CUDA builds, not cpu ones"),
        (["--cuda-arch", "9 0"], "use compute capabilities such as 90 or 86,89"),
    ):
        result = run_nemolaunch("build", *argv, "--prefix", str(tmp_path / "p"))
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
        assert result.returncode == 2 and len(errors) == 1 and hint in errors[0], result.stderr
    assert not (tmp_path / "p").exists()
    script = run_script("--backend", "cpu", "--cuda-arch", "90", "--prefix", str(tmp_path / "q"), env=dict(os.environ))
    assert script.returncode == 2 and "--cuda-arch is for CUDA builds, and this one is cpu" in script.stderr


@pytest.mark.parametrize(
    ("cmake_error", "code", "message"),
    [
        (
            NO_GPU_FOR_NATIVE,
            2,
            "no NVIDIA GPU is visible here for llama.cpp's default CUDA target 'native': pass --cuda-arch",
        ),
        (
            NO_CUBLAS,
            4,
            "has no cuBLAS (cublas_v2.h, libcublas), which llama.cpp needs: "
            "install it (apt-get install libcublas-dev-13-0",
        ),
    ],
    ids=["no-gpu-visible", "no-cublas"],
)
def test_cuda_configure_gaps_are_named(tmp_path: Path, cmake_error: str, code: int, message: str) -> None:
    tree = fake_llama_cpp_tree(tmp_path / "src", cmake_error=cmake_error)
    prefix = tmp_path / "prefix"

    result = run_nemolaunch(
        "build",
        "--backend",
        "cuda",
        "--source",
        str(tree),
        "--prefix",
        str(prefix),
        env=cli_env(PATH=fake_nvcc_path(tmp_path)),
    )

    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == code and len(errors) == 1 and message in errors[0], result.stderr
    assert not prefix.exists()  # refused before anything was built: no empty build folder


def test_cuda_build_on_this_machine_says_what_is_missing(tmp_path: Path) -> None:
    """The real llama.cpp and the real toolkit, where there is an nvcc but no GPU (this project's machines)."""
    source = os.environ.get("NEMOLAUNCH_TEST_LLAMA_CPP_SOURCE")
    nvcc = shutil.which("nvcc")
    if not source or nvcc is None:
        pytest.skip("needs nvcc and NEMOLAUNCH_TEST_LLAMA_CPP_SOURCE")
    if shutil.which("nvidia-smi") is not None:
        pytest.skip("a GPU driver is here: --backend cuda would really compile CUDA")
    # Where this toolkit keeps its headers, in nvcc's own words (TOP=...), wrappers and symlinks or not.
    dry = subprocess.run([nvcc, "--dryrun", "-c", "x.cu"], capture_output=True, text=True, cwd=tmp_path).stderr
    top = next(line.split("=", 1)[1] for line in dry.splitlines() if line.startswith("#$ TOP="))
    has_cublas = any(Path(top).glob("**/include/cublas_v2.h"))
    prefix = tmp_path / "prefix"

    result = run_nemolaunch("build", "--backend", "cuda", "--source", source, "--prefix", str(prefix), timeout=300)

    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    if has_cublas:
        assert result.returncode == 2 and "no NVIDIA GPU is visible here" in errors[0]
    else:
        assert result.returncode == 4 and "has no cuBLAS" in errors[0]
    assert not prefix.exists()


def test_device_lists_as_llama_cpp_prints_them() -> None:
    from nemolaunch.adapters.llamacpp import parse_device_list, runs_on

    # common_print_available_devices() in llama.cpp's common/arg.cpp; CUDA builds log to stderr first.
    cuda = (
        "Available devices:\n"
        "  CUDA0: NVIDIA H200 (143156 MiB, 142503 MiB free)\n"
        "  CUDA1: NVIDIA H200 (143156 MiB, 1203 MiB free)\n"
    )
    metal = "Available devices:\n  MTL0: Apple M3 Ultra (475136 MiB, 475135 MiB free)\n"
    cpu_only = "Available devices:\n  (none)\n"
    assert parse_device_list(cuda) == ("CUDA0", "CUDA1") and runs_on(parse_device_list(cuda), "cuda")
    assert runs_on(parse_device_list(metal), "metal") and not runs_on(parse_device_list(metal), "cuda")
    assert parse_device_list(cpu_only) == () and not runs_on((), "cuda")
    assert parse_device_list("error: unknown argument: --list-devices\n") == ()


def test_the_real_build_lists_its_devices(llama_bin_dir: Path) -> None:
    from nemolaunch.adapters.hardware_probe import probe_hardware
    from nemolaunch.adapters.llamacpp import list_devices

    devices = list_devices(llama_bin_dir / "llama-server")
    assert devices is not None
    made_with = _build_under_test(llama_bin_dir)
    if made_with is not None and made_with[0] == "cpu":
        assert devices == ()  # a CPU build: no device besides the CPU
    elif made_with is not None and made_with[0] == "cuda":
        # A CUDA build lists the GPUs this machine shows it (none where there is no GPU or driver).
        cuda_gpus = [gpu for gpu in probe_hardware().facts.gpus if gpu.backend == "cuda"]
        assert [name for name in devices if name.startswith("CUDA")] == [f"CUDA{i}" for i in range(len(cuda_gpus))]
    assert list_devices(Path("/bin/false")) is None  # no answer is not "no devices"


def test_auto_on_a_gpu_machine_without_nvcc_says_why_cuda_and_how_to_skip_it(tmp_path: Path) -> None:
    path = path_without(tmp_path, "nvcc", "nvidia-smi")
    smi = Path(path) / "nvidia-smi"  # the driver's tool: the machine looks like a GPU machine (the hardware edge)
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    smi.chmod(0o755)
    env = cli_env(PATH=path + ":" + str(Path(sys.executable).parent), CUDA_HOME=str(tmp_path / "no-cuda"))

    result = run_nemolaunch("build", "--prefix", str(tmp_path / "p"), env=env)

    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 4 and len(errors) == 1, result.stderr
    assert "--backend cuda needs nvcc" in errors[0]
    assert errors[0].endswith("(the GPU here made `--backend auto` choose cuda; `--backend cpu` builds without it)")
    assert not (tmp_path / "p").exists()
