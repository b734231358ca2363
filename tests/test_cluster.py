"""Several machines over llama.cpp RPC, without processes: worker addresses, cluster files, golden cluster plans."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nemolaunch import ULTRA_REPO
from nemolaunch.adapters.hardware_file import load_hardware_facts, load_machine
from nemolaunch.adapters.rpc_probe import parse_rpc_devices
from nemolaunch.core.catalog import builtin_catalog
from nemolaunch.core.cluster import (
    CPU_WORKER_RESERVE_MIN_BYTES,
    FIT_TARGET_BYTES,
    RpcEndpoint,
    Worker,
    WorkerDevice,
    fit_targets_mib,
    machines_needed,
    parse_endpoint,
    parse_endpoints,
    worker_like,
)
from nemolaunch.core.forecast import ULTRA_ARCHITECTURE
from nemolaunch.core.launch import Cluster, ServerLaunch, server_argv
from nemolaunch.core.load_forecast import (
    ASSUMED_LINK_BYTES_PER_S,
    CACHED_LOAD_PASSES,
    DISK_BYTES_PER_S,
    FIRST_LOAD_PASSES,
    HASH_BYTES_PER_S,
    LOAD_FIXED_S,
    MEMORY_PASS_BYTES_PER_S,
)
from nemolaunch.core.planner import Plan, PlanRequest, memory_budget, plan_launch
from nemolaunch.core.speed import RAM_BYTES_PER_S_PER_CORE
from nemolaunch.errors import BadRpcEndpoint, HardwareFileInvalid

from conftest import cli_env, run_nemolaunch, write_gguf

FIXTURES = Path(__file__).parent / "fixtures"
CLUSTERS = FIXTURES / "clusters"
GiB = 1024**3
MiB = 1024**2


# --- worker addresses ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("10.0.0.2:50052", "10.0.0.2", 50052), ("gpu-box", "gpu-box", 50052), (" box.lan:1 ", "box.lan", 1)],
)
def test_endpoints_as_llama_cpp_takes_them(text: str, host: str, port: int) -> None:
    assert parse_endpoint(text) == RpcEndpoint(host, port)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("10.0.0.2:", "port after ':' is missing"),
        (":50052", "host is missing"),
        ("10.0.0.2:99999", "'99999' is not a port"),
        ("10.0.0.2:http", "'http' is not a port"),
        ("[::1]:50052", "IPv6"),
        ("fe80::1", "IPv6"),
        ("http://10.0.0.2:50052", "IPv6"),  # two colons: llama.cpp would split at the first
        ("10.0.0.2/24:50052", "not a host name"),
    ],
)
def test_malformed_endpoints_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(BadRpcEndpoint) as caught:
        parse_endpoint(text)
    assert words in caught.value.reason
    assert "\n" not in str(caught.value)


def test_a_worker_named_twice_is_refused() -> None:
    with pytest.raises(BadRpcEndpoint, match="named twice"):
        parse_endpoints("10.0.0.2:50052,10.0.0.3,10.0.0.2")


def test_loopback_workers_are_this_machine() -> None:
    assert parse_endpoint("127.0.0.1:1").is_loopback and parse_endpoint("localhost:2").is_loopback
    assert not parse_endpoint("10.0.0.2:1").is_loopback and not parse_endpoint("box:1").is_loopback


# --- what llama.cpp's --list-devices says of workers ------------------------------------------------------
LISTED = """\
Available devices:
  CUDA0: NVIDIA H200 (143155 MiB, 142629 MiB free)
  RPC0: 10.0.0.2:50052 (24105 MiB, 24105 MiB free)
  RPC1: 10.0.0.3:50052 (81559 MiB, 80121 MiB free)
  RPC2: 10.0.0.3:50052 (81559 MiB, 79000 MiB free)
"""


def test_rpc_devices_are_read_per_worker_in_order() -> None:
    devices = parse_rpc_devices(LISTED)
    assert list(devices) == ["10.0.0.2:50052", "10.0.0.3:50052"]
    assert devices["10.0.0.2:50052"] == [WorkerDevice("RPC0", 24105 * MiB, 24105 * MiB)]
    assert [device.name for device in devices["10.0.0.3:50052"]] == ["RPC1", "RPC2"]
    assert devices["10.0.0.3:50052"][1].free_bytes == 79000 * MiB


def test_a_device_reporting_all_its_memory_free_keeps_a_reserve_for_its_machine() -> None:
    # llama.cpp's CPU backend reports free == total: --fit would fill the worker's RAM to the last byte.
    cpu = WorkerDevice("RPC0", 256 * GiB, 256 * GiB)
    gpu = WorkerDevice("RPC1", 80 * GiB, 78 * GiB)
    assert cpu.unmeasured and not gpu.unmeasured
    assert cpu.fit_target_bytes == round(256 * GiB * 0.10)
    assert WorkerDevice("RPC2", 16 * GiB, 16 * GiB).fit_target_bytes == CPU_WORKER_RESERVE_MIN_BYTES
    assert gpu.fit_target_bytes == FIT_TARGET_BYTES
    assert gpu.usable_bytes == 78 * GiB - FIT_TARGET_BYTES
    workers = (Worker(parse_endpoint("a:1"), (cpu,)), Worker(parse_endpoint("b:1"), (gpu,)))
    assert fit_targets_mib(workers) == [26214, 1024]
    # One value alone would be broadcast by llama.cpp to every device: a second pins the rest to the default.
    assert fit_targets_mib(workers[:1]) == [26214, 1024]
    assert fit_targets_mib(workers[1:]) is None


def test_the_launch_names_the_workers_and_their_fit_targets() -> None:
    launch = ServerLaunch(
        binary="llama-server",
        model=Path("m.gguf"),
        ctx_size=4096,
        alias="m",
        cluster=Cluster(endpoints=("10.0.0.2:50052", "10.0.0.3:50052"), fit_target_mib=(26214, 1024)),
        extra_args=("--threads", "8"),
    )
    argv = server_argv(launch)
    assert argv[argv.index("--rpc") + 1] == "10.0.0.2:50052,10.0.0.3:50052"
    assert argv[argv.index("--fit-target") + 1] == "26214,1024"
    assert argv[-2:] == ["--threads", "8"]  # the user's own options stay last
    assert "--tensor-split" not in argv  # --fit already splits by each device's free memory


# --- cluster files ----------------------------------------------------------------------------------------
def test_a_cluster_file_gives_the_head_and_the_workers_its_machines_make() -> None:
    head, workers = load_machine(CLUSTERS / "rtx4090_head_two_128gb_workers.json")
    assert head.gpus[0].name == "NVIDIA GeForce RTX 4090"
    assert [str(worker.endpoint) for worker in workers] == ["10.0.0.2:50052", "10.0.0.3:50052"]
    # A machine without a GPU lends its CPU, reported as llama.cpp will report it: all its RAM free.
    (ram,) = workers[0].devices
    assert (ram.name, ram.total_bytes, ram.free_bytes, ram.kind) == ("CPU", 128 * GiB, 128 * GiB, "cpu")
    assert ram.reserve_bytes == 6 * GiB  # what that machine's doctor said was in use already
    # Its speed, for the forecast: no measurement in the file, so estimated from its 16 cores.
    assert ram.bandwidth_bytes_per_s == 16 * RAM_BYTES_PER_S_PER_CORE
    # A plain machine file still reads as one machine.
    assert load_machine(FIXTURES / "hardware" / "b200x4.json")[1] == ()


def test_a_gpu_worker_lends_its_gpus_unless_told_to_lend_its_ram_too() -> None:
    facts = load_hardware_facts(FIXTURES / "hardware" / "rtx4090_256gb.json")
    endpoint = parse_endpoint("10.0.0.9")
    assert [device.name for device in worker_like(facts, endpoint).devices] == ["CUDA0"]
    both = worker_like(facts, endpoint, devices=["CUDA0", "CPU"])
    assert [device.kind for device in both.devices] == ["gpu", "cpu"]
    with pytest.raises(ValueError, match="'CUDA1' is not on that machine"):
        worker_like(facts, endpoint, devices=["CUDA1"])


@pytest.mark.parametrize(
    ("mutate", "field", "problem"),
    [
        (lambda data: data["workers"][0].update(endpoint="10.0.0.2:99999"), "workers[0].endpoint", "not a port"),
        (lambda data: data["workers"][1].pop("facts"), "workers[1].facts", "Field required"),
        (lambda data: data["workers"][0].update(port=50052), "workers[0].port", "unknown key"),
        (lambda data: data["workers"][1].update(endpoint="10.0.0.2:50052"), "workers", "named twice"),
        (lambda data: data.update(workers=[]), "workers", "at least 1 item"),
        (lambda data: data["head"]["memory"].pop("total_bytes"), "head.memory.total_bytes", "Field required"),
        (lambda data: data["workers"][0].update(devices=["CUDA0"]), "workers[0].devices", "'CUDA0' is not on"),
        (lambda data: data["workers"][0].update(link_gbit_per_s=0), "workers[0].link_gbit_per_s", "greater than 0"),
        (
            lambda data: data["workers"][1].update(link_gbit_per_s=1, link_bytes_per_s=1e8),
            "workers[1].link_gbit_per_s",
            "not both",
        ),
    ],
)
def test_a_cluster_file_with_a_mistake_names_the_key(tmp_path: Path, mutate, field: str, problem: str) -> None:
    data = json.loads((CLUSTERS / "rtx4090_head_two_128gb_workers.json").read_text())
    mutate(data)
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(data))
    with pytest.raises(HardwareFileInvalid) as caught:
        load_machine(path)
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_a_cluster_file_mistake_is_one_line_through_the_cli(tmp_path: Path) -> None:
    data = json.loads((CLUSTERS / "two_cpu_256gb.json").read_text())
    data["workers"][0]["endpoint"] = "10.0.0.2:"
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(data))
    result = run_nemolaunch("plan", "--hardware", str(path), env=cli_env(HF_HUB_OFFLINE="1"))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1, result.stderr
    assert "workers[0].endpoint" in errors[0] and "port after ':' is missing" in errors[0]
    assert "Traceback" not in result.stderr


# --- golden cluster plans --------------------------------------------------------------------------------
def ultra_plan(path: Path, *, alone: bool = False, **request: object) -> Plan:
    facts, workers = load_machine(path)
    catalog = builtin_catalog(ULTRA_REPO)
    assert catalog is not None
    return plan_launch(facts, catalog, PlanRequest(parallel=4, **request), ULTRA_ARCHITECTURE, () if alone else workers)  # type: ignore[arg-type]


def test_two_256gb_machines_run_a_quant_neither_holds_alone() -> None:
    path = CLUSTERS / "two_cpu_256gb.json"
    alone = ultra_plan(path, alone=True)
    cluster = ultra_plan(path)
    assert alone.quant is not None and alone.quant.name == "UD-Q2_K_XL"  # the head alone: the floor
    assert (cluster.quant.name, cluster.placement, cluster.fits) == ("UD-Q6_K_XL", "cluster", True)
    # Neither machine holds it alone.
    assert cluster.chosen.forecast.total > cluster.budget.head_bytes
    assert cluster.chosen.forecast.total > cluster.budget.workers[0].usable_bytes
    # The budget: the head's available RAM + the worker's RAM less the reserve its CPU device needs.
    assert cluster.budget.head_bytes == 244 * GiB
    assert cluster.budget.worker_bytes == 256 * GiB - round(256 * GiB * 0.10)
    hosts = {host.host: host for host in cluster.hosts}
    assert list(hosts) == ["this machine", "10.0.0.2:50052"]
    assert all(host.fits for host in cluster.hosts)
    # llama.cpp fills the worker (a GPU-type device to the head) first; the rest stays in the head's RAM.
    worker = hosts["10.0.0.2:50052"]
    assert worker.planned_bytes == cluster.budget.worker_bytes
    assert sum(host.planned_bytes for host in cluster.hosts) == cluster.chosen.forecast.total
    reasons = " ".join(cluster.reasons)
    assert "10.0.0.2:50052" in reasons and "spreads over 2 machines" in reasons
    assert any("reports all 274.9 GB as free" in warning for warning in cluster.warnings)


def test_a_24gb_gpu_head_with_two_128gb_workers() -> None:
    path = CLUSTERS / "rtx4090_head_two_128gb_workers.json"
    alone = ultra_plan(path, alone=True)
    assert alone.quant is None and not alone.fits
    rpc = next(way for way in alone.ways_out if way.kind == "rpc")
    # Alone it suggests RPC; the two workers it has are what it takes, with a third machine to spare.
    assert rpc.machines == 3 and "--device CUDA0,CPU" in rpc.text
    cluster = ultra_plan(path)
    assert (cluster.quant.name, cluster.placement, cluster.fits) == ("UD-Q4_K_XL", "cluster", True)
    assert cluster.budget.total_bytes == 87_494_492_160 + 2 * (128 * GiB - round(128 * GiB * 0.10))
    assert [host.host for host in cluster.hosts] == ["this machine", "10.0.0.2:50052", "10.0.0.3:50052"]
    head = cluster.hosts[0]
    assert head.devices == ("CUDA0 NVIDIA GeForce RTX 4090", "CPU")
    # The two workers are alike: they get the same share.
    assert cluster.hosts[1].weights_bytes == cluster.hosts[2].weights_bytes > 0
    assert sum(host.weights_bytes for host in cluster.hosts) == pytest.approx(cluster.quant.size_bytes, abs=3)
    assert cluster.to_json()["hosts"][1]["host"] == "10.0.0.2:50052"
    # Every worker device's compute buffer and rpc-server count in the forecast.
    assert cluster.chosen.forecast.compute > alone.assessments[0].forecast.compute


def test_the_next_quant_up_would_not_fit_the_cluster() -> None:
    cluster = ultra_plan(CLUSTERS / "rtx4090_head_two_128gb_workers.json")
    names = [item.quant.name for item in cluster.assessments]
    better = cluster.assessments[names.index("UD-Q4_K_XL") + 1]
    assert not better.fits and better.forecast.total > cluster.budget.total_bytes


def test_workers_on_this_machine_add_no_memory() -> None:
    facts = load_hardware_facts(FIXTURES / "hardware" / "cpu_epyc_384gb.json")
    local = Worker(parse_endpoint("127.0.0.1:50052"), (WorkerDevice("RPC0", 384 * GiB, 384 * GiB),))
    budget = memory_budget(facts, (local,))
    assert budget.total_bytes == memory_budget(facts).total_bytes
    assert budget.placement_for(1) == "cpu"
    catalog = builtin_catalog(ULTRA_REPO)
    assert catalog is not None
    result = plan_launch(facts, catalog, PlanRequest(), ULTRA_ARCHITECTURE, (local,))
    assert any("127.0.0.1:50052" in warning and "counted once" in warning for warning in result.warnings)
    assert result.hosts == ()


@pytest.mark.parametrize(("name", "machines"), [("rtx3090x2_128gb", 2), ("mac_m3_ultra_256gb", 2), ("laptop_64gb", 4)])
def test_nothing_fits_says_how_many_machines_like_this_one_would(name: str, machines: int) -> None:
    result = ultra_plan(FIXTURES / "hardware" / f"{name}.json")
    rpc = next(way for way in result.ways_out if way.kind == "rpc")
    assert rpc.machines == machines
    assert f"{machines} machines like this one" in rpc.text
    assert "nemolaunch rpc-worker" in rpc.text and "nemolaunch serve --rpc" in rpc.text
    assert "trusted networks only" in rpc.text


def test_machines_needed() -> None:
    assert machines_needed(forecast_bytes=10, head_bytes=10, worker_bytes=0) == 1
    assert machines_needed(forecast_bytes=11, head_bytes=10, worker_bytes=0) is None
    assert machines_needed(forecast_bytes=25, head_bytes=10, worker_bytes=5) == 4


def test_plan_reads_a_cluster_file_through_the_cli() -> None:
    result = run_nemolaunch(
        "plan", "--hardware", str(CLUSTERS / "two_cpu_256gb.json"), "--json", env=cli_env(HF_HUB_OFFLINE="1")
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["quant"], data["placement"]) == ("UD-Q6_K_XL", "cluster")
    assert [host["host"] for host in data["hosts"]] == ["this machine", "10.0.0.2:50052"]
    assert data["workers"][0]["endpoint"] == "10.0.0.2:50052"
    command = data["command"]
    assert command[command.index("--rpc") + 1] == "10.0.0.2:50052"
    assert command[command.index("--fit-target") + 1] == "26214,1024"
    table = run_nemolaunch(
        "plan", "--hardware", str(CLUSTERS / "two_cpu_256gb.json"), env=cli_env(HF_HUB_OFFLINE="1", COLUMNS="120")
    )
    assert "UD-Q6_K_XL over 2 machines" in table.stderr
    assert "10.0.0.2:50052" in table.stderr


def test_serve_refuses_a_cluster_file_without_live_workers(tmp_path: Path, llama_bin_dir: Path) -> None:
    model = write_gguf(tmp_path / "m.gguf")
    result = run_nemolaunch(
        "serve", str(model), "--hardware", str(CLUSTERS / "two_cpu_256gb.json"), "--dry-run",
        "--llama-cpp", str(llama_bin_dir), env=cli_env(HF_HUB_OFFLINE="1"),
    )  # fmt: skip
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1 and "describes a cluster (10.0.0.2:50052)" in errors[0], result.stderr
    assert "--rpc HOST:PORT" in errors[0]


# --- the load over the network ---------------------------------------------------------------------------
def test_the_plan_forecasts_each_workers_load_at_its_link_speed(tmp_path: Path) -> None:
    data = json.loads((CLUSTERS / "rtx4090_head_two_128gb_workers.json").read_text())
    data["workers"][0]["link_gbit_per_s"] = 10  # the second names no link: assumed gigabit
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(data))
    cluster = ultra_plan(path)
    assert cluster.load is not None
    ten, assumed = cluster.load.workers
    # What each worker receives is its share of the weights; the seconds follow from its link.
    assert [ten.weights_bytes, assumed.weights_bytes] == [host.weights_bytes for host in cluster.hosts[1:]]
    assert (ten.link_bytes_per_s, ten.link_source) == (10e9 / 8, "cluster file")
    assert (assumed.link_bytes_per_s, assumed.link_source) == (ASSUMED_LINK_BYTES_PER_S, "assumed")
    assert ten.link_s == pytest.approx(ten.weights_bytes / (10e9 / 8))
    # Beside the link, a first load reads each weight on the head and hashes it there and on the worker.
    size = ten.weights_bytes
    passes = FIRST_LOAD_PASSES * size / MEMORY_PASS_BYTES_PER_S  # zeroing and copying, both sides
    assert ten.cold_s == pytest.approx(ten.link_s + 2 * size / DISK_BYTES_PER_S + 2 * size / HASH_BYTES_PER_S + passes)
    assert cluster.load.cold_s == pytest.approx(LOAD_FIXED_S + ten.cold_s + assumed.cold_s)
    # The cache: hashes, not bytes, so the link drops out: the head's hashing and the worker's disk are left,
    # which at 10 Gb/s cost about what the link did, and at 1 Gb/s far less.
    assert ten.cached_s == pytest.approx(
        2 * size / DISK_BYTES_PER_S + size / HASH_BYTES_PER_S + CACHED_LOAD_PASSES * size / MEMORY_PASS_BYTES_PER_S
    )
    assert assumed.cached_s < assumed.cold_s / 4
    assert cluster.load.round_trips_per_token == 2
    words = next(reason for reason in cluster.reasons if reason.startswith("first load"))
    minutes = round(cluster.load.cold_s / 60)
    assert words.startswith(f"first load ~{minutes} min over the network; next loads ~")
    assert "(worker cache)" in words and "10.0.0.3:50052" in words and "assumed 1 Gb/s" in words
    assert cluster.to_json()["load"]["workers"][1]["link_source"] == "assumed"


def test_plan_shows_the_load_forecast_for_a_cluster_file() -> None:
    result = run_nemolaunch(
        "plan", "--hardware", str(CLUSTERS / "two_cpu_256gb.json"), env=cli_env(HF_HUB_OFFLINE="1", COLUMNS="400")
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"first load ~\d+ min over the network; next loads ~\d+ (s|min) \(worker cache\)", result.stderr)
    assert "assumed 1 Gb/s" in result.stderr
