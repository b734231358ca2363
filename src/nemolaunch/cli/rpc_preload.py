"""`rpc-worker --preload MODEL`: fill this worker's tensor cache from its own copy of the model.

MODEL is a local GGUF (any shard of a split one) or REPO:QUANT, downloaded here by nemolaunch at
this machine's own internet speed (or found in its Hub cache). Every tensor over 10 MiB is written
under its hash (``nemolaunch.adapters.rpc_preload``), all of them: which layers land on this worker
is the head's --fit to decide at load, so the disk it takes is said before anything is written.
"""

from __future__ import annotations

import time
from pathlib import Path

from nemolaunch.cli.output import err_console, note


def preload_shards(model: str, *, download: bool = True) -> tuple[Path, ...] | None:
    """The GGUF files of MODEL on this machine: a local file's shards, or the quant downloaded
    (None without ``download`` when they are not here yet)."""
    from nemolaunch.adapters.gguf_files import inspect_model
    from nemolaunch.cli.planning import read_model_spec
    from nemolaunch.errors import BadOption

    spec = read_model_spec(model)
    if spec.local is not None:
        return inspect_model(spec.local).shards
    assert spec.reference is not None
    if spec.reference.quant is None:
        raise BadOption(
            option="--preload", value=model, hint="name the quant the head runs, e.g. REPO:UD-Q4_K_XL (see its plan)"
        )
    return _downloaded(model, download=download)


def _downloaded(model: str, *, download: bool) -> tuple[Path, ...] | None:
    from nemolaunch.cli.download import download_planned
    from nemolaunch.cli.planning import plan_model, read_model_spec
    from nemolaunch.core.launch import DEFAULT_PARALLEL

    reference = read_model_spec(model).reference
    assert reference is not None
    # force: the quant is the head's choice for the whole cluster; this machine alone need not hold it.
    planned = plan_model(
        reference, quant=None, ctx_size=None, force=True, parallel=DEFAULT_PARALLEL, hardware_file=None
    )
    if planned.local_files:
        return planned.local_files
    if not download:
        return None
    result = download_planned(
        planned, local_dir=None, workers=4, stall_timeout=60.0, verify=False, xet=False, quiet=False
    )
    return tuple(result.files.values())


def preload(model: str, *, folder: Path, dry_run: bool) -> None:
    """Say what the cache will take, check the disk, and write it (not in a dry run)."""
    import shutil

    from nemolaunch.adapters.rpc_preload import big_tensors, seed_cache
    from nemolaunch.core.download_plan import human_bytes

    shards = preload_shards(model, download=not dry_run)
    if shards is None:  # a dry run never downloads
        note(f"--preload {model}: would download it here, then seed its tensors over 10 MiB into {folder}")
        return
    tensors = big_tensors(shards)
    total = sum(tensor.size for tensor in tensors)
    probe = folder if folder.exists() else next((p for p in folder.parents if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    note(
        f"--preload {model}: {len(tensors)} tensors over 10 MiB, {human_bytes(total)}, into {folder} "
        f"({human_bytes(free)} free there)"
    )
    if dry_run:
        return
    started = time.monotonic()
    last = [started]

    def progress(number: int, _tensor: object, _hashed: bool) -> None:
        now = time.monotonic()
        if now - last[0] >= 10:
            last[0] = now
            err_console.print(f"  seeding: {number + 1} of {len(tensors)} tensors", markup=False)

    result = seed_cache(tensors, folder, on_tensor=progress)
    note(
        f"tensor cache seeded in {time.monotonic() - started:.1f} s: {result.written} written "
        f"({human_bytes(result.written_bytes)}), {result.present} there already"
    )
