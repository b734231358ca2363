"""The llama-server / llama-cli command lines, built without touching the machine."""

from __future__ import annotations

from pathlib import Path

from nemolaunch import ULTRA_ALIAS
from nemolaunch.core.launch import (
    CliLaunch,
    Sampling,
    ServerLaunch,
    cli_argv,
    client_base_url,
    default_alias,
    is_loopback,
    openai_snippet,
    server_argv,
)


def test_server_argv_has_nvidia_sampling_and_every_option_as_its_own_word() -> None:
    launch = ServerLaunch(binary="/opt/llama/bin/llama-server", model=Path("/m/a.gguf"), ctx_size=32768, alias="a")
    assert server_argv(launch) == [
        "/opt/llama/bin/llama-server",
        "--model", "/m/a.gguf",
        "--ctx-size", "32768",
        "--temp", "1.0",
        "--top-p", "0.95",
        "--min-p", "0.01",
        "--port", "8001",
        "--host", "127.0.0.1",
        "--alias", "a",
        "--metrics",  # what `nemolaunch ps` reads the generation speed from
    ]  # fmt: skip


def test_server_argv_names_the_log_file() -> None:
    launch = ServerLaunch(binary="llama-server", model=Path("m.gguf"), ctx_size=4096, alias="x",
                          log_file=Path("/var/log/n/server.log"), extra_args=("--jinja",))  # fmt: skip
    argv = server_argv(launch)
    assert argv[argv.index("--log-file") + 1] == "/var/log/n/server.log"
    assert argv[-1] == "--jinja"


def test_server_argv_passes_key_file_and_extra_args_last() -> None:
    launch = ServerLaunch(
        binary="llama-server",
        model=Path("m.gguf"),
        ctx_size=4096,
        alias="x",
        host="0.0.0.0",
        port=9000,
        sampling=Sampling(temperature=0.6, top_p=0.9, min_p=0.0),
        api_key_file=Path("/run/secrets/key"),
        extra_args=("--threads", "8", "--jinja"),
    )
    argv = server_argv(launch)
    assert argv[argv.index("--temp") + 1] == "0.6"
    assert argv[argv.index("--min-p") + 1] == "0.0"
    assert argv[argv.index("--api-key-file") + 1] == "/run/secrets/key"
    assert argv[-3:] == ["--threads", "8", "--jinja"]


def test_cli_argv_interactive_and_single_turn() -> None:
    interactive = cli_argv(CliLaunch(binary="llama-cli", model=Path("m.gguf"), ctx_size=2048))
    assert "--prompt" not in interactive and "--single-turn" not in interactive
    assert interactive[interactive.index("--temp") + 1] == "1.0"
    one_turn = cli_argv(
        CliLaunch(binary="llama-cli", model=Path("m.gguf"), ctx_size=2048, prompt="hi there", n_predict=8)
    )
    assert one_turn[one_turn.index("--prompt") + 1] == "hi there"
    assert "--single-turn" in one_turn
    assert one_turn[one_turn.index("--n-predict") + 1] == "8"
    assert "-no-cnv" not in one_turn  # rejected by this chat-only llama-cli


def test_default_alias_names_the_ultra_by_its_hub_name_and_others_by_stem() -> None:
    ultra = Path("UD-Q4_K_XL/NVIDIA-Nemotron-3-Ultra-550B-A55B-UD-Q4_K_XL-00001-of-00008.gguf")
    assert default_alias(ultra) == ULTRA_ALIAS
    assert default_alias(Path("x.gguf"), general_name="NVIDIA Nemotron 3 Ultra 550B A55B") == ULTRA_ALIAS
    assert default_alias(Path("/m/tiny-nemotron-00001-of-00003.gguf")) == "tiny-nemotron"
    assert default_alias(Path("/m/Qwen3-8B-Q4_K_M.gguf")) == "Qwen3-8B-Q4_K_M"


def test_loopback_and_base_url() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("myhost")
    assert client_base_url("0.0.0.0", 8001) == "http://127.0.0.1:8001/v1"
    assert client_base_url("::1", 8002) == "http://[::1]:8002/v1"


def test_openai_snippet_never_contains_a_key() -> None:
    snippet = openai_snippet(base_url="http://127.0.0.1:8001/v1", model=ULTRA_ALIAS, needs_key=True)
    assert 'base_url="http://127.0.0.1:8001/v1"' in snippet
    assert f'model="{ULTRA_ALIAS}"' in snippet
    assert 'os.environ["NEMOLAUNCH_API_KEY"]' in snippet
    compile(snippet, "snippet", "exec")  # it is valid Python a person can paste


def test_openai_snippet_reads_a_key_file_by_name() -> None:
    snippet = openai_snippet(
        base_url="http://127.0.0.1:8001/v1", model="m", needs_key=True, key_file=Path("/home/me/.nemotron-key")
    )
    assert "open('/home/me/.nemotron-key').readline().strip()" in snippet
    assert "NEMOLAUNCH_API_KEY" not in snippet
    compile(snippet, "snippet", "exec")


def test_parallel_is_passed_only_when_chosen() -> None:
    base = ServerLaunch(binary="llama-server", model=Path("m.gguf"), ctx_size=4096, alias="m")
    assert "--parallel" not in server_argv(base)
    argv = server_argv(ServerLaunch(binary="llama-server", model=Path("m.gguf"), ctx_size=4096, alias="m", parallel=2))
    assert argv[argv.index("--parallel") + 1] == "2"
