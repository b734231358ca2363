"""Hardware facts: the JSON shape, --hardware files, and the probes fed recorded outputs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nemolaunch.adapters import hardware_probe
from nemolaunch.adapters.hardware_file import load_hardware_facts
from nemolaunch.adapters.hardware_probe import (
    existing_ancestor,
    parse_proc_cpuinfo,
    parse_sysctl_cpu_features,
    parse_sysctl_int,
    probe_cuda,
    probe_disk,
    probe_hardware,
    probe_metal,
    select_visible_devices,
)
from nemolaunch.core.hardware import (
    HardwareFacts,
    MemoryFacts,
    metal_working_set_bytes,
    parse_hardware_facts,
)
from nemolaunch.errors import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    HardwareFileInvalid,
    HardwareFileMissing,
    HardwareFileNotJson,
    describe,
)

FIXTURES = Path(__file__).parent / "fixtures" / "hardware"
GiB = 1024**3

# The example from the issue, verbatim.
ISSUE_EXAMPLE = {
    "os": "linux",
    "arch": "x86_64",
    "cpu": {"model": "AMD EPYC 9654", "physical_cores": 96, "logical_cores": 192, "flags": ["avx2", "avx512f"]},
    "memory": {"total_bytes": 412316860416, "available_bytes": 395136991232, "bandwidth_bytes_per_s": None},
    "disk": {"path": "/data/hf", "free_bytes": 2000000000000},
    "gpus": [
        {
            "backend": "cuda",
            "index": 0,
            "name": "NVIDIA B200",
            "total_bytes": 193273528320,
            "free_bytes": 191126044672,
            "compute_capability": "10.0",
            "unified": False,
            "memory_bandwidth_bytes_per_s": None,
        }
    ],
}


# --- the schema -------------------------------------------------------------------------
def test_issue_example_round_trips_to_the_same_json() -> None:
    # Written before the disk's read speeds were facts: it still loads, and says they were not measured.
    facts = HardwareFacts.model_validate(ISSUE_EXAMPLE)
    disk = {**ISSUE_EXAMPLE["disk"], "read_bytes_per_s": None, "random_read_bytes_per_s": None}  # type: ignore[dict-item]
    disk |= {"read_ahead_bytes": None, "fault_read_bytes_per_s": None}
    assert json.loads(facts.to_json()) == {**ISSUE_EXAMPLE, "disk": disk}
    assert facts.gpus[0].free_bytes == 191126044672


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.json")), ids=lambda path: path.stem)
def test_every_recorded_machine_loads_and_round_trips(fixture: Path) -> None:
    facts = load_hardware_facts(fixture)
    assert HardwareFacts.model_validate_json(facts.to_json()) == facts
    assert json.loads(facts.to_json()) == json.loads(fixture.read_text())


def test_files_written_before_the_bandwidth_fields_still_load() -> None:
    old = json.loads(json.dumps(ISSUE_EXAMPLE))
    del old["memory"]["bandwidth_bytes_per_s"], old["gpus"][0]["memory_bandwidth_bytes_per_s"]
    facts = HardwareFacts.model_validate(old)
    assert facts.memory.bandwidth_bytes_per_s is None and facts.gpus[0].memory_bandwidth_bytes_per_s is None


def test_missing_optional_values_are_written_as_null() -> None:
    facts = HardwareFacts.model_validate(
        {"os": "linux", "arch": "aarch64", "cpu": {}, "memory": {"total_bytes": 8 * GiB, "available_bytes": GiB}}
    )
    data = json.loads(facts.to_json())
    assert data["disk"] is None
    assert data["gpus"] == []
    assert data["cpu"] == {"model": None, "physical_cores": None, "logical_cores": None, "flags": []}


# --- --hardware files ---------------------------------------------------------------------
def test_missing_hardware_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(HardwareFileMissing) as caught:
        load_hardware_facts(path)
    code, message = describe(caught.value)
    assert code == EXIT_NOT_FOUND
    assert str(path) in message


def test_hardware_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_text('{"os": "linux",\n "arch": }')
    with pytest.raises(HardwareFileNotJson) as caught:
        load_hardware_facts(path)
    code, message = describe(caught.value)
    assert code == EXIT_USAGE
    assert "line 2 column 10" in message
    assert "\n" not in message


def _broken(change: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(ISSUE_EXAMPLE))
    change(data)
    return data


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        (_broken(lambda d: d["gpus"][0].update(vram=1)), "gpus[0].vram", "unknown key"),
        (_broken(lambda d: d.update(hostname="box")), "hostname", "unknown key"),
        (_broken(lambda d: d.pop("cpu")), "cpu", "Field required"),
        (_broken(lambda d: d["memory"].update(total_bytes="lots")), "memory.total_bytes", "valid integer"),
        (_broken(lambda d: d["gpus"][0].update(free_bytes=-1)), "gpus[0].free_bytes", "greater than or equal"),
        (_broken(lambda d: d["gpus"][0].update(backend="rocm")), "gpus[0].backend", "'cuda' or 'metal'"),
        ([1, 2], "(top level)", "valid dictionary"),
    ],
    ids=["unknown-gpu-key", "unknown-top-key", "missing-cpu", "text-size", "negative", "backend", "list"],
)
def test_hardware_file_not_in_the_schema_names_the_first_bad_field(
    tmp_path: Path, data: object, field: str, problem: str
) -> None:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(data))
    with pytest.raises(HardwareFileInvalid) as caught:
        load_hardware_facts(path)
    assert caught.value.field == field
    assert problem in caught.value.problem
    code, message = describe(caught.value)
    assert code == EXIT_USAGE
    assert f"{field}: " in message
    assert "\n" not in message


def test_parse_hardware_facts_names_its_source_in_errors() -> None:
    with pytest.raises(HardwareFileNotJson) as caught:
        parse_hardware_facts("", source="recorded.json")
    assert caught.value.path == "recorded.json"


# --- Apple Metal -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ram", "wired_mb", "expected"),
    [
        (16 * GiB, None, 11_453_246_122),  # 2/3 of 16 GiB
        (36 * GiB, None, 25_769_803_776),  # still 2/3 at exactly 36 GiB
        (48 * GiB, None, 38_654_705_664),  # 3/4 above
        (512 * GiB, None, 412_316_860_416),
        (512 * GiB, 0, 412_316_860_416),  # 0 means "not set"
        (256 * GiB, 245_760, 257_698_037_760),  # iogpu.wired_limit_mb replaces the rule
        (64 * GiB, 1_000_000, 64 * GiB),  # never more than the RAM
    ],
)
def test_metal_working_set_rule(ram: int, wired_mb: int | None, expected: int) -> None:
    assert metal_working_set_bytes(ram, wired_mb) == expected


def _sysctl(outputs: dict[str, str]) -> Any:
    return lambda key: outputs.get(key)


def test_probe_metal_uses_the_default_share_when_no_wired_limit() -> None:
    memory = MemoryFacts(total_bytes=512 * GiB, available_bytes=528_173_527_040)
    gpu = probe_metal(
        memory, sysctl=_sysctl({"iogpu.wired_limit_mb": "0\n", "machdep.cpu.brand_string": "Apple M3 Ultra\n"})
    )
    assert (gpu.backend, gpu.name, gpu.unified, gpu.index) == ("metal", "Apple M3 Ultra", True, 0)
    assert gpu.total_bytes == gpu.free_bytes == 412_316_860_416


def test_probe_metal_honours_the_wired_limit_and_caps_free_at_available_ram() -> None:
    memory = MemoryFacts(total_bytes=256 * GiB, available_bytes=200_000_000_000)
    gpu = probe_metal(memory, sysctl=_sysctl({"iogpu.wired_limit_mb": "245760\n"}))
    assert gpu.total_bytes == 257_698_037_760
    assert gpu.free_bytes == 200_000_000_000
    assert gpu.name == "Apple GPU"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0\n", 0), ("245760\n", 245760), ("", None), (None, None), ("sysctl: unknown oid 'iogpu'", None)],
)
def test_parse_sysctl_int(text: str | None, expected: int | None) -> None:
    assert parse_sysctl_int(text) == expected


def test_sysctl_cpu_features_from_an_intel_mac() -> None:
    text = "FPU VME DE PSE SSE4.1 SSE4.2 AVX1.0 FMA\nRDWRFSGS AVX2 BMI1 AVX512F"
    assert parse_sysctl_cpu_features(text) == sorted(
        ["fpu", "vme", "de", "pse", "sse4.1", "sse4.2", "avx1.0", "fma", "rdwrfsgs", "avx2", "bmi1", "avx512f"]
    )


def test_sysctl_cpu_features_from_apple_silicon_keep_only_present_ones() -> None:
    text = (
        "hw.optional.arm.FEAT_BF16: 1\n"
        "hw.optional.arm.FEAT_SME: 0\n"
        "hw.optional.arm.FEAT_I8MM: 1\n"
        "hw.optional.neon: 1\n"
        "hw.optional.arm64: 1\n"
    )
    assert parse_sysctl_cpu_features(text) == ["arm64", "bf16", "i8mm", "neon"]


# --- CPU ------------------------------------------------------------------------------------
X86_CPUINFO = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 9654 96-Core Processor
flags		: fpu vme avx2 avx512f sse4_2 avx2

processor	: 1
vendor_id	: AuthenticAMD
model name	: AMD EPYC 9654 96-Core Processor
flags		: fpu vme avx2 avx512f sse4_2
"""

ARM_CPUINFO = """processor	: 0
BogoMIPS	: 2000.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp sve
CPU implementer	: 0x41
"""


def test_proc_cpuinfo_from_x86() -> None:
    assert parse_proc_cpuinfo(X86_CPUINFO) == (
        "AMD EPYC 9654 96-Core Processor",
        ["avx2", "avx512f", "fpu", "sse4_2", "vme"],
    )


def test_proc_cpuinfo_from_arm_has_features_but_no_model_name() -> None:
    model, flags = parse_proc_cpuinfo(ARM_CPUINFO)
    assert model is None
    assert "sve" in flags and "asimd" in flags and len(flags) == 12


# --- CUDA through NVML, fed recorded values ----------------------------------------------
class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


Memory = namedtuple("Memory", "total free used")


class FakeNvml:
    """pynvml's surface as the probe uses it, holding values recorded from real machines."""

    NVMLError = FakeNVMLError
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_GPU_IS_LOST = 15
    NVML_ERROR_UNKNOWN = 999

    def __init__(self, devices: list[dict[str, Any]], *, init_error: int | None = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "570.124.06"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        return self.devices[index]

    def nvmlDeviceGetUUID(self, handle: dict[str, Any]) -> str:
        return handle["uuid"]

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str | bytes:
        return handle["name"]

    def nvmlDeviceGetCudaComputeCapability(self, handle: dict[str, Any]) -> tuple[int, int]:
        return handle["cc"]

    NVML_CLOCK_MEM = 2

    def nvmlDeviceGetMemoryBusWidth(self, handle: dict[str, Any]) -> int:
        if "bus_bits" not in handle:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return handle["bus_bits"]

    def nvmlDeviceGetMaxClockInfo(self, handle: dict[str, Any], clock: int) -> int:
        assert clock == self.NVML_CLOCK_MEM
        return handle["mem_mhz"]

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> Memory:
        if "memory_error" in handle:
            raise FakeNVMLError(handle["memory_error"])
        return Memory(handle["total"], handle["free"], handle["total"] - handle["free"])


# Two RTX 3090s as nvidia-smi sees them; the first drives the desktop (Xorg holds ~470 MB).
def _two_3090s() -> list[dict[str, Any]]:
    return [
        {
            "uuid": "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6",
            "name": b"NVIDIA GeForce RTX 3090",  # older pynvml returns bytes
            "cc": (8, 6),
            "total": 25_769_803_776,
            "free": 25_299_189_760,
            "bus_bits": 384,  # nvidia-smi -q: Memory Bus Width; Max Clocks, Memory: 9751 MHz
            "mem_mhz": 9751,
        },
        {
            "uuid": "GPU-1b4c2e7a-0e55-4f3e-9d6b-6a7f0b1c2d3e",
            "name": "NVIDIA GeForce RTX 3090",
            "cc": (8, 6),
            "total": 25_769_803_776,
            "free": 25_501_630_464,
        },
    ]


def test_probe_cuda_reads_the_memory_bandwidth_where_nvml_answers() -> None:
    probe = probe_cuda(FakeNvml(_two_3090s()), environ={})
    # 384 bits × 9751 MHz × 2 / 8 = 936 GB/s, the RTX 3090's datasheet figure.
    assert probe.gpus[0].memory_bandwidth_bytes_per_s == pytest.approx(936.1e9, rel=1e-3)
    assert probe.gpus[1].memory_bandwidth_bytes_per_s is None  # not supported: the table by name will say


def test_probe_cuda_reads_name_total_free_and_capability() -> None:
    nvml = FakeNvml(_two_3090s())
    probe = probe_cuda(nvml, environ={})
    assert [(gpu.index, gpu.name, gpu.total_bytes, gpu.free_bytes) for gpu in probe.gpus] == [
        (0, "NVIDIA GeForce RTX 3090", 25_769_803_776, 25_299_189_760),
        (1, "NVIDIA GeForce RTX 3090", 25_769_803_776, 25_501_630_464),
    ]
    assert {gpu.compute_capability for gpu in probe.gpus} == {"8.6"}
    assert not any(gpu.unified for gpu in probe.gpus)
    assert probe.driver_version == "570.124.06"
    assert probe.warnings == ()
    assert nvml.shutdowns == 1


def test_free_memory_held_by_another_process_counts_against_us() -> None:
    devices = _two_3090s()[:1]
    devices[0]["free"] = 5_000_000_000  # a training job holds the rest
    (gpu,) = probe_cuda(FakeNvml(devices), environ={}).gpus
    assert gpu.free_bytes == 5_000_000_000
    assert gpu.total_bytes == 25_769_803_776


def test_cuda_visible_devices_limits_and_orders_the_gpus() -> None:
    probe = probe_cuda(FakeNvml(_two_3090s()), environ={"CUDA_VISIBLE_DEVICES": "1"})
    assert [gpu.index for gpu in probe.gpus] == [1]
    assert [gpu.free_bytes for gpu in probe.gpus] == [25_501_630_464]


def test_cuda_visible_devices_by_uuid_prefix() -> None:
    probe = probe_cuda(FakeNvml(_two_3090s()), environ={"CUDA_VISIBLE_DEVICES": "GPU-1b4c2e7a"})
    assert [gpu.index for gpu in probe.gpus] == [1]


def test_cuda_visible_devices_out_of_range_hides_everything_and_warns() -> None:
    probe = probe_cuda(FakeNvml(_two_3090s()), environ={"CUDA_VISIBLE_DEVICES": "5"})
    assert probe.gpus == ()
    assert probe.warnings == ("CUDA_VISIBLE_DEVICES entries CUDA would not use were ignored: 5",)


UUIDS = ["GPU-8932f937-d72c", "GPU-1b4c2e7a-0e55", "GPU-1b4c9999-aaaa"]


@pytest.mark.parametrize(
    ("value", "indices", "ignored"),
    [
        (None, (0, 1, 2), ()),
        ("", (), ()),
        ("  ", (), ()),
        ("-1", (), ("-1",)),
        ("2,0", (2, 0), ()),
        ("0, 1", (0, 1), ()),
        ("0,5,1", (0,), ("5", "1")),
        ("0,-1,1", (0,), ("-1", "1")),
        ("1,1", (1,), ("1",)),
        ("GPU-8932f937", (0,), ()),
        ("gpu-8932F937-D72C", (0,), ()),
        ("GPU-1b4c", (), ("GPU-1b4c",)),  # ambiguous prefix
        ("MIG-5f1d2a3b-0000", (), ("MIG-5f1d2a3b-0000",)),
    ],
)
def test_select_visible_devices(value: str | None, indices: tuple[int, ...], ignored: tuple[str, ...]) -> None:
    visible = select_visible_devices(value, UUIDS)
    assert visible.indices == indices
    assert visible.ignored == ignored


@pytest.mark.parametrize("code", [FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND, FakeNvml.NVML_ERROR_DRIVER_NOT_LOADED])
def test_no_nvml_library_or_driver_means_no_gpus_quietly(code: int) -> None:
    probe = probe_cuda(FakeNvml(_two_3090s(), init_error=code), environ={})
    assert probe == hardware_probe.CudaProbe()


def test_nvml_failing_to_start_is_a_warning() -> None:
    probe = probe_cuda(FakeNvml(_two_3090s(), init_error=FakeNvml.NVML_ERROR_UNKNOWN), environ={})
    assert probe.gpus == ()
    assert len(probe.warnings) == 1
    assert probe.warnings[0].startswith("NVML failed to start (NVML error 999)")


def test_nvml_failing_mid_probe_is_a_warning_and_still_shuts_down() -> None:
    devices = _two_3090s()
    devices[1]["memory_error"] = FakeNvml.NVML_ERROR_GPU_IS_LOST
    nvml = FakeNvml(devices)
    probe = probe_cuda(nvml, environ={})
    assert probe.gpus == ()
    assert probe.warnings == ("NVML failed while reading the GPUs (NVML error 15): planning without CUDA GPUs",)
    assert nvml.shutdowns == 1


def test_gpu_sharing_system_memory_is_unified_and_sized_by_ram() -> None:
    # GB10 (DGX Spark): NVML has no memory figures of its own for the GPU.
    devices = [{"uuid": "GPU-aaaa", "name": "NVIDIA GB10", "cc": (12, 1), "memory_error": 3}]
    ram = MemoryFacts(total_bytes=128 * GiB, available_bytes=118_000_000_000)
    (gpu,) = probe_cuda(FakeNvml(devices), environ={}, unified_memory=ram).gpus
    assert (gpu.unified, gpu.total_bytes, gpu.free_bytes, gpu.compute_capability) == (
        True,
        128 * GiB,
        118_000_000_000,
        "12.1",
    )


def test_probe_cuda_without_pynvml_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert probe_cuda(environ={}) == hardware_probe.CudaProbe()


# --- disk ----------------------------------------------------------------------------------
def test_disk_free_is_read_at_the_first_existing_ancestor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Path] = []

    def disk_usage(path: Path) -> Any:
        asked.append(Path(path))
        return SimpleNamespace(total=10**12, used=4 * 10**11, free=6 * 10**11)

    monkeypatch.setattr(hardware_probe.shutil, "disk_usage", disk_usage)
    target = tmp_path / "hf" / "hub" / "models"
    disk = probe_disk(target)
    assert asked == [tmp_path]
    assert disk is not None
    assert disk.path == str(target)
    assert disk.free_bytes == 6 * 10**11


def test_existing_ancestor() -> None:
    assert existing_ancestor(Path("/")) == Path("/")
    assert existing_ancestor(Path("/definitely/not/here/at/all")) == Path("/")


# --- the real probe on this machine ------------------------------------------------------
def test_probe_hardware_describes_this_machine_without_touching_the_environment(tmp_path: Path) -> None:
    before = dict(os.environ)
    probe = probe_hardware(model_dir=tmp_path / "models", environ={"CUDA_VISIBLE_DEVICES": ""})
    assert dict(os.environ) == before
    facts = probe.facts
    assert facts.os == platform.system().lower()
    assert facts.arch == platform.machine().lower()
    assert 0 < facts.memory.available_bytes <= facts.memory.total_bytes
    assert facts.disk is not None and facts.disk.path == str(tmp_path / "models")
    if facts.os != "darwin":
        assert facts.gpus == []  # CUDA_VISIBLE_DEVICES="" hides every CUDA GPU
    assert HardwareFacts.model_validate_json(facts.to_json()) == facts


def test_importing_the_core_and_adapters_loads_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "import nemolaunch.core.planner, nemolaunch.adapters.hardware_probe\n"
        "import nemolaunch.hub.listing, nemolaunch.adapters.gguf_header\n"
        "print(sorted(m for m in ('pynvml', 'huggingface_hub', 'gguf', 'psutil') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"
