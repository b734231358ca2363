"""Settings that stick: config.toml and NEMOLAUNCH_* under the flags, one model, one check per value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemolaunch.core.settings import KEYS, resolve_settings
from nemolaunch.errors import BadOption, PortOutOfRange, SettingsFileInvalid

from conftest import cli_env, run_nemolaunch


def resolve(flags=None, environ=None, file_values=None):
    return resolve_settings(
        flags=flags or {}, environ=environ or {}, file_values=file_values or {}, file="/home/u/.config/config.toml"
    )


def test_flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() -> None:
    settings = resolve(
        flags={"port": 9001, "host": None},  # None: the flag was not given
        environ={"NEMOLAUNCH_PORT": "9002", "NEMOLAUNCH_TEMP": "0.6", "NEMOLAUNCH_HOST": "0.0.0.0"},
        file_values={"port": 9003, "temp": 0.7, "ctx_size": "max", "quant": "UD-Q4_K_XL"},
    )
    values = settings.values
    assert (values.port, values.host, values.temp, values.ctx_size, values.quant) == (
        9001, "0.0.0.0", 0.6, "max", "UD-Q4_K_XL"
    )  # fmt: skip
    assert settings.origins["port"] == "flag" and settings.where("port") == "--port"
    assert settings.where("temp") == "NEMOLAUNCH_TEMP"
    assert settings.where("ctx_size") == "/home/u/.config/config.toml (ctx_size)"
    assert settings.where("min_p") == "built-in default" and values.min_p == 0.01
    assert set(settings.to_json()["settings"]) == set(KEYS)


def test_a_number_of_tokens_may_be_written_as_a_toml_number() -> None:
    assert resolve(file_values={"ctx_size": 4096}).values.ctx_size == "4096"
    assert resolve(file_values={"ctx_size": "max"}).values.ctx_size == "max"


@pytest.mark.parametrize(
    ("layer", "value", "error", "words"),
    [
        ("flags", {"port": 70000}, PortOutOfRange, "port 70000 is out of range"),
        ("environ", {"NEMOLAUNCH_PORT": "eighty"}, BadOption, "NEMOLAUNCH_PORT eighty is not valid: input should be"),
        ("environ", {"NEMOLAUNCH_TOP_P": "1.5"}, BadOption, "NEMOLAUNCH_TOP_P 1.5 is not valid: use a value from 0"),
        ("file_values", {"temp": -1}, SettingsFileInvalid, "config.toml: temp: -1 is not valid: use 0 or more"),
        # TOML's true is no number, though pydantic would take it as 1 (`port = true` became --port 1).
        ("file_values", {"port": True}, SettingsFileInvalid, "port: true is not valid: true or false is not"),
        ("file_values", {"parallel": False}, SettingsFileInvalid, "parallel: false is not valid: true or false is not"),
        ("file_values", {"top_p": True}, SettingsFileInvalid, "top_p: true is not valid: true or false is not"),
        ("file_values", {"ctx_size": -5}, SettingsFileInvalid, "ctx_size: -5 is not valid: use a positive number"),
        ("file_values", {"ctx_size": True}, SettingsFileInvalid, "ctx_size: true is not valid: true or false is not"),
        ("environ", {"NEMOLAUNCH_TEMP": "hot"}, BadOption, "valid number; use 0 or more (NVIDIA recommends 1.0)"),
        ("file_values", {"cache_type": "q3"}, SettingsFileInvalid, "cache_type: 'q3' is not valid: use one of f16"),
        ("file_values", {"colour": "blue"}, SettingsFileInvalid, "colour: unknown key (known: model, quant"),
        ("flags", {"ctx_size": "lots"}, BadOption, "--ctx-size lots is not valid: give a number of tokens, or max"),
        ("flags", {"host": " "}, BadOption, "--host '' is not valid: give an address"),
        ("environ", {"NEMOLAUNCH_HUB_DEADLINE": "-1"}, BadOption, "HUB_DEADLINE -1 is not valid: give a number of se"),
        ("environ", {"NEMOLAUNCH_HUB_DEADLINE": "inf"}, BadOption, "HUB_DEADLINE inf is not valid: give a number of"),
        ("file_values", {"hub_deadline": True}, SettingsFileInvalid, "hub_deadline: true is not valid: true or false"),
    ],
)
def test_a_bad_value_names_where_it_came_from(layer: str, value: dict, error: type, words: str) -> None:
    with pytest.raises(error) as caught:
        resolve(**{layer: value})
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return cli_env(NEMOLAUNCH_CONFIG=str(path))


def test_config_show_and_path(tmp_path: Path) -> None:
    env = config(tmp_path, 'port = 8123\nctx_size = "max"\n')
    path = run_nemolaunch("config", "path", env=env)
    assert path.stdout.strip() == str(tmp_path / "config.toml")
    shown = run_nemolaunch("config", "show", "--json", env={**env, "NEMOLAUNCH_TEMP": "0.5"})
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["file"] == str(tmp_path / "config.toml")
    assert data["settings"]["port"] == {"value": 8123, "from": "file", "where": f"{tmp_path}/config.toml (port)"}
    assert data["settings"]["temp"]["from"] == "env" and data["settings"]["temp"]["value"] == 0.5
    assert data["settings"]["host"] == {"value": "127.0.0.1", "from": "default", "where": "built-in default"}
    table = run_nemolaunch("config", "show", env={**env, "COLUMNS": "200"})
    assert "NEMOLAUNCH_PORT" in table.stdout and "8123" in table.stdout


def test_serve_takes_its_defaults_from_the_file_and_the_flags_win(tmp_path: Path, llama_bin_dir: Path) -> None:
    from conftest import write_gguf

    model = write_gguf(tmp_path / "m.gguf")
    env = config(tmp_path, 'port = 8123\nhost = "127.0.0.2"\ntemp = 0.6\ncache_type = "q8_0"\n')
    base = ["serve", str(model), "--llama-cpp", str(llama_bin_dir), "--dry-run", "--json"]
    from_file = json.loads(run_nemolaunch(*base, env=env).stdout)["command"]
    assert from_file[from_file.index("--port") + 1] == "8123"
    assert from_file[from_file.index("--host") + 1] == "127.0.0.2"
    assert from_file[from_file.index("--temp") + 1] == "0.6"
    assert from_file[from_file.index("--cache-type-k") + 1] == "q8_0"
    flagged = json.loads(run_nemolaunch(*base, "--port", "8124", env={**env, "NEMOLAUNCH_TEMP": "0.9"}).stdout)
    command = flagged["command"]
    assert command[command.index("--port") + 1] == "8124" and command[command.index("--temp") + 1] == "0.9"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("port = [", "is not TOML ("),
        ('colour = "blue"\n', "colour: unknown key (known: model"),
        ("port = 70000\n", "port: 70000 is not valid: use a port from 1 to 65535; fix it there, or remove the key"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_file(tmp_path: Path, text: str, words: str) -> None:
    env = config(tmp_path, text)
    for verb in (["plan"], ["config", "show"], ["chat", "-p", "hi"]):
        result = run_nemolaunch(*verb, env=env)
        assert result.returncode == 2, (verb, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("nemolaunch: error:")]
        assert len(errors) == 1 and str(tmp_path / "config.toml") in errors[0] and words in errors[0], result.stderr
        assert "Traceback" not in result.stderr


def test_chat_finds_its_server_in_the_environment(tmp_path: Path) -> None:
    result = run_nemolaunch("chat", "-p", "hi", env=cli_env(NEMOLAUNCH_URL="http://127.0.0.1:9/v1"))
    assert result.returncode == 4 and "no server answers at http://127.0.0.1:9/v1" in result.stderr


def test_plan_finds_llama_cpp_where_the_file_says(tmp_path: Path) -> None:
    """plan asks RPC workers with the llama-server it would run: the one config.toml names."""
    env = config(tmp_path, f'llama_cpp = "{tmp_path / "nowhere"}"\n')
    result = run_nemolaunch("plan", "--rpc", "127.0.0.1:1", env={**env, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 3
    assert f"names {tmp_path / 'nowhere'}, which holds no executable llama-server" in result.stderr
