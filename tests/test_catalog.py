"""The quant catalog: grouping GGUF files into quants, repo:quant names, and where listings come from."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nemolaunch import ULTRA_REPO
from nemolaunch.core.catalog import (
    NANO_REPO,
    QUALITY_FLOOR_BPW,
    ULTRA,
    Catalog,
    ListingEntry,
    ModelReference,
    build_catalog,
    builtin_catalog,
    is_side_file,
    parse_model_reference,
    quant_tag,
    select_catalog,
)
from nemolaunch.errors import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    HubRepoNotFound,
    HubRequestFailed,
    MalformedModelReference,
    NoGGUFInRepo,
    QuantIncomplete,
    UnknownQuant,
    describe,
)
from nemolaunch.hub.listing import hub_offline, list_cached_files, load_catalog

from conftest import free_port
from fakehub import API, FakeHub, Fault, fake_hub_fixture  # noqa: F401  (fixture)

LISTINGS = Path(__file__).parent / "fixtures" / "listings"
ULTRA_LADDER = [
    "UD-IQ1_S",
    "UD-IQ1_M",
    "UD-IQ2_XXS",
    "UD-IQ2_M",
    "UD-Q2_K_XL",
    "UD-IQ3_XXS",
    "UD-Q3_K_XL",
    "UD-Q4_K_XL",
    "UD-Q5_K_XL",
    "UD-Q6_K_XL",
    "Q8_0",
    "UD-Q8_K_XL",
    "BF16",
]


def tree_items(name: str) -> list[ListingEntry]:
    """A recorded list_repo_tree answer's files (its folders carry no size and drop out)."""
    raw_items = json.loads((LISTINGS / name).read_text())
    return [ListingEntry(raw["path"], raw["size"]) for raw in raw_items if "size" in raw]


def entries(*pairs: tuple[str, int]) -> list[ListingEntry]:
    return [ListingEntry(path, size) for path, size in pairs]


def shards(folder: str, stem: str, total: int, size: int, only: list[int] | None = None) -> list[ListingEntry]:
    return [
        ListingEntry(f"{folder}/{stem}-{index:05d}-of-{total:05d}.gguf", size)
        for index in range(1, total + 1)
        if only is None or index in only
    ]


# --- grouping a real-looking listing -------------------------------------------------------
def test_ultra_hub_listing_groups_folders_into_the_ladder() -> None:
    catalog = build_catalog(ULTRA_REPO, tree_items("ultra_hub.json"), source="hub")
    assert catalog.names == ULTRA_LADDER
    assert catalog.source == "hub"
    assert catalog.incomplete == ()
    iq3 = catalog.find("UD-IQ3_XXS")
    assert iq3.shard_count == 6
    assert iq3.size_bytes == 252_630_000_000
    assert iq3.files[0] == "UD-IQ3_XXS/NVIDIA-Nemotron-3-Ultra-550B-A55B-UD-IQ3_XXS-00001-of-00006.gguf"
    assert iq3.dynamic
    assert not catalog.find("Q8_0").dynamic
    smallest = catalog.quants[0]
    assert (smallest.name, smallest.size_bytes, smallest.shard_count) == ("UD-IQ1_S", 189_040_000_000, 4)


def test_side_files_and_non_gguf_files_are_not_quants() -> None:
    catalog = build_catalog(ULTRA_REPO, tree_items("ultra_hub.json"), source="hub")
    every_file = {path for quant in catalog.quants for path in quant.files}
    assert "imatrix_unsloth.gguf" not in every_file
    assert "mtp-NVIDIA-Nemotron-3-Ultra-550B-A55B-Q8_0.gguf" not in every_file
    assert catalog.find("Q8_0").shard_count == 12  # the MTP head did not join the Q8_0 quant
    assert all(path.endswith(".gguf") for path in every_file)


def test_builtin_table_matches_the_recorded_hub_listing() -> None:
    hub = build_catalog(ULTRA_REPO, tree_items("ultra_hub.json"), source="hub")
    builtin = builtin_catalog(ULTRA_REPO)
    assert builtin is not None
    assert builtin.approximate and builtin.source == "builtin"
    assert [(q.name, q.size_bytes, q.files) for q in builtin.quants] == [
        (q.name, q.size_bytes, q.files) for q in hub.quants
    ]


def test_builtin_ladder_matches_the_published_figures() -> None:
    sizes = {quant.name: quant.size_bytes for quant in ULTRA.quants}
    assert 185e9 < sizes["UD-IQ1_S"] < 195e9  # "dynamic 1-bit ≈189 GB on disk"
    assert 240e9 < sizes["UD-IQ3_XXS"] < 260e9  # "3-bit ≈256 GB memory"
    assert 290e9 < sizes["UD-Q4_K_XL"] < 310e9  # "4-bit ≈300 GB"
    assert 590e9 < sizes["UD-Q8_K_XL"] < 610e9  # "8-bit ≈600 GB"
    assert [quant.name for quant in ULTRA.quants] == ULTRA_LADDER


def test_flat_repo_groups_by_the_file_name_tag() -> None:
    catalog = build_catalog(NANO_REPO, tree_items("nano_flat.json"), source="hub")
    assert catalog.names == ["UD-Q2_K_XL", "UD-Q3_K_XL", "UD-Q4_K_XL", "UD-Q5_K_XL", "UD-Q6_K_XL", "Q8_0", "BF16"]
    assert catalog.find("UD-Q4_K_XL").files == ("Nemotron-3-Nano-30B-A3B-UD-Q4_K_XL.gguf",)
    bf16 = catalog.find("bf16")
    assert bf16.shard_count == 2
    assert bf16.size_bytes == 63_160_000_000


def test_missing_shard_makes_a_quant_incomplete_and_not_offered() -> None:
    listing = shards("UD-Q4_K_XL", "M-UD-Q4_K_XL", 4, 10, only=[1, 2, 4]) + shards("Q8_0", "M-Q8_0", 2, 20)
    catalog = build_catalog("a/b", listing, source="cache")
    assert catalog.names == ["Q8_0"]
    (broken,) = catalog.incomplete
    assert (broken.name, broken.shard_total, broken.missing) == ("UD-Q4_K_XL", 4, (3,))
    with pytest.raises(QuantIncomplete) as caught:
        catalog.find("ud-q4_k_xl")
    assert caught.value.missing == [3]
    code, message = describe(caught.value)
    assert code == EXIT_NOT_FOUND
    assert message == "a/b:UD-Q4_K_XL is incomplete (shards 3 of 4 are missing): pick another quant"


def test_mixed_folders_and_root_files() -> None:
    listing = [
        *entries(("Model-Q8_0.gguf", 800), ("extras/Model-Q4_K_M.gguf", 480), ("README.md", 5)),
        *shards("UD-Q4_K_XL", "Model-UD-Q4_K_XL", 2, 260),
        *entries(("BF16/Model-BF16.gguf", 1600)),
    ]
    catalog = build_catalog("a/b", listing, source="hub")
    assert [(quant.name, quant.size_bytes, quant.shard_count) for quant in catalog.quants] == [
        ("Q4_K_M", 480, 1),
        ("UD-Q4_K_XL", 520, 2),
        ("Q8_0", 800, 1),
        ("BF16", 1600, 1),
    ]


def test_shards_of_different_splits_in_one_quant_are_incomplete() -> None:
    listing = [
        ListingEntry("Q8_0/M-Q8_0-00001-of-00002.gguf", 5),
        ListingEntry("Q8_0/M-Q8_0-00002-of-00002.gguf", 5),
        ListingEntry("Q8_0/M-Q8_0-00003-of-00003.gguf", 5),
        ListingEntry("Q4_0/M-Q4_0.gguf", 3),
    ]
    catalog = build_catalog("a/b", listing, source="hub")
    assert catalog.names == ["Q4_0"]
    assert [(broken.name, broken.reason) for broken in catalog.incomplete] == [
        ("Q8_0", "its files belong to different splits")
    ]


@pytest.mark.parametrize(
    ("name", "side"),
    [
        ("mmproj-F16.gguf", True),
        ("mmproj-model-f16.gguf", True),
        ("Model-mmproj-bf16.gguf", True),
        ("mtp-NVIDIA-Nemotron-3-Ultra-550B-A55B-Q8_0.gguf", True),
        ("imatrix_unsloth.gguf", True),
        ("Model.imatrix.gguf", True),
        ("smtpserver-Q4_K_M.gguf", False),  # "mtp" inside a word is not the MTP head
        ("Model-Q4_K_M.gguf", False),
    ],
)
def test_is_side_file(name: str, side: bool) -> None:
    assert is_side_file(name) is side


@pytest.mark.parametrize(
    ("name", "tag"),
    [
        ("Model-Q4_K_M.gguf", "Q4_K_M"),
        ("model.q8_0.gguf", "Q8_0"),
        ("Nemotron-3-Nano-30B-A3B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("NVIDIA-Nemotron-3-Ultra-550B-A55B-BF16-00001-of-00023.gguf", "BF16"),
        ("x-IQ4_XS.gguf", "IQ4_XS"),
        ("x-UD-IQ1_S-00002-of-00004.gguf", "UD-IQ1_S"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("model.gguf", None),
        ("Nemotron-3-Nano-30B-A3B.gguf", None),
    ],
)
def test_quant_tag(name: str, tag: str | None) -> None:
    assert quant_tag(name) == tag


def test_quants_are_ordered_by_bits_per_weight_not_file_size() -> None:
    listing = entries(("M-Q4_K_M.gguf", 10_000), ("M-IQ4_XS.gguf", 11_000), ("M-Q2_K.gguf", 12_000))
    catalog = build_catalog("a/b", listing, source="hub")
    assert catalog.names == ["Q2_K", "IQ4_XS", "Q4_K_M"]
    assert [quant.below_quality_floor for quant in catalog.quants] == [True, False, False]
    assert QUALITY_FLOOR_BPW == 2.9


def test_unknown_quant_type_gets_bits_estimated_from_the_nearest_known_size() -> None:
    listing = entries(("M-Q4_K_M.gguf", 10_000_000_000), ("M-Q3_K_XXL.gguf", 8_000_000_000))
    catalog = build_catalog("a/b", listing, source="hub")
    unknown = catalog.find("Q3_K_XXL")
    assert unknown.bits_estimated
    assert unknown.bits_per_weight == 3.88  # 4.85 × 8/10
    assert catalog.names == ["Q3_K_XXL", "Q4_K_M"]


def test_a_repo_without_gguf_is_an_error() -> None:
    with pytest.raises(NoGGUFInRepo) as caught:
        build_catalog("nvidia/model", entries(("model.safetensors", 5), ("README.md", 1)), source="hub")
    code, message = describe(caught.value)
    assert code == EXIT_NOT_FOUND
    assert message.startswith("nvidia/model holds no GGUF model files (per the hub listing)")


# --- naming quants ------------------------------------------------------------------------------
def _ultra() -> Catalog:
    catalog = builtin_catalog(ULTRA_REPO)
    assert catalog is not None
    return catalog


@pytest.mark.parametrize(
    ("asked", "found"), [("UD-Q4_K_XL", "UD-Q4_K_XL"), ("ud-q4_k_xl", "UD-Q4_K_XL"), ("Q4_K_XL", "UD-Q4_K_XL"),
                         ("q8_0", "Q8_0"), ("bf16", "BF16")],
)  # fmt: skip
def test_find_is_case_insensitive_and_accepts_the_tag_without_ud(asked: str, found: str) -> None:
    assert _ultra().find(asked).name == found


def test_unknown_quant_lists_the_ones_that_exist() -> None:
    with pytest.raises(UnknownQuant) as caught:
        _ultra().find("Q4_K_M")
    assert caught.value.available == ULTRA_LADDER
    code, message = describe(caught.value)
    assert code == EXIT_NOT_FOUND
    assert message == f"{ULTRA_REPO} has no quant Q4_K_M: pick one of " + ", ".join(ULTRA_LADDER)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ULTRA_REPO, ModelReference(ULTRA_REPO)),
        (f"{ULTRA_REPO}:UD-Q4_K_XL", ModelReference(ULTRA_REPO, "UD-Q4_K_XL")),
        ("  unsloth/Nemotron-3-Nano-30B-A3B-GGUF:q8_0 ", ModelReference(NANO_REPO, "q8_0")),
        ("a/b.c_d", ModelReference("a/b.c_d")),
    ],
)
def test_parse_model_reference(text: str, expected: ModelReference) -> None:
    assert parse_model_reference(text) == expected


def test_model_reference_prints_as_it_is_written() -> None:
    assert str(ModelReference(ULTRA_REPO, "UD-Q4_K_XL")) == f"{ULTRA_REPO}:UD-Q4_K_XL"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "it is empty"),
        ("unsloth", "the repository must be owner/name"),
        ("a/b/c", "the repository must be owner/name"),
        ("unsloth/model:", "nothing follows ':'"),
        ("a/b:c:d", "it has more than one ':'"),
        ("uns loth/model", "'uns loth' is not a valid owner or name (letters, digits, '-', '_', '.')"),
        ("-bad/model", "'-bad' is not a valid owner or name (letters, digits, '-', '_', '.')"),
        ("a--b/model", "'a--b' is not a valid owner or name (letters, digits, '-', '_', '.')"),
        ("/model", "'' is not a valid owner or name (letters, digits, '-', '_', '.')"),
        ("unsloth/model:Q4 K", "'Q4 K' is not a quant name"),
    ],
)
def test_malformed_model_reference(text: str, reason: str) -> None:
    with pytest.raises(MalformedModelReference) as caught:
        parse_model_reference(text)
    assert caught.value.reason == reason
    code, message = describe(caught.value)
    assert code == EXIT_USAGE
    assert reason in message and "owner/repo:QUANT" in message


# --- which listing wins -------------------------------------------------------------------------
COMPLETE_CACHE = shards("UD-Q2_K_XL", "NVIDIA-Nemotron-3-Ultra-550B-A55B-UD-Q2_K_XL", 2, 7)
PARTIAL_CACHE = shards("UD-Q2_K_XL", "NVIDIA-Nemotron-3-Ultra-550B-A55B-UD-Q2_K_XL", 5, 7, only=[1, 2])


def test_hub_listing_wins() -> None:
    catalog = select_catalog(ULTRA_REPO, hub=tree_items("ultra_hub.json"), cache=COMPLETE_CACHE)
    assert catalog.source == "hub"
    assert len(catalog.quants) == 13


def test_cache_with_a_complete_quant_is_used_when_the_hub_is_not() -> None:
    catalog = select_catalog(ULTRA_REPO, hub=None, cache=COMPLETE_CACHE)
    assert (catalog.source, catalog.names, catalog.quants[0].size_bytes) == ("cache", ["UD-Q2_K_XL"], 14)


def test_builtin_table_when_the_cache_has_only_partial_downloads() -> None:
    catalog = select_catalog(ULTRA_REPO, hub=None, cache=PARTIAL_CACHE)
    assert catalog.source == "builtin"
    assert catalog.names == ULTRA_LADDER


def test_other_repo_with_only_partial_downloads_reports_them() -> None:
    catalog = select_catalog("someone/model-GGUF", hub=None, cache=PARTIAL_CACHE)
    assert catalog.source == "cache"
    assert catalog.quants == ()
    assert [broken.missing for broken in catalog.incomplete] == [(3, 4, 5)]


def test_other_repo_with_no_listing_at_all_is_an_error() -> None:
    with pytest.raises(NoGGUFInRepo) as caught:
        select_catalog("someone/model-GGUF", hub=None, cache=None)
    assert caught.value.source == "cache"


def test_builtin_catalog_only_for_nemotron_repos() -> None:
    assert builtin_catalog("someone/model-GGUF") is None
    assert builtin_catalog(ULTRA_REPO.lower()) is not None


# --- the adapter: Hub, cache, offline ----------------------------------------------------------
def make_cache(cache_dir: Path, repo: str, files: dict[str, bytes], *, commit: str = "a" * 40) -> Path:
    """A hub cache laid out as huggingface_hub writes it: blobs, snapshot links, refs/main."""
    repo_dir = cache_dir / ("models--" + repo.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    for number, (path, content) in enumerate(files.items()):
        blob = repo_dir / "blobs" / f"blob{number}"
        blob.write_bytes(content)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snapshot


def ultra_on(hub: FakeHub, repo: str = ULTRA_REPO) -> None:
    """The recorded Ultra listing served by the fake hub: one byte a file, listed at its real size."""
    files = [raw for raw in json.loads((LISTINGS / "ultra_hub.json").read_text()) if raw["type"] == "file"]
    hub.add_repo(repo, {raw["path"]: b"x" for raw in files}, declared_sizes={raw["path"]: raw["size"] for raw in files})


def test_load_catalog_from_the_hub(fake_hub: FakeHub, tmp_path: Path) -> None:
    ultra_on(fake_hub)
    lookup = load_catalog(ULTRA_REPO, endpoint=fake_hub.url, cache_dir=tmp_path, environ={})
    assert lookup.catalog.source == "hub"
    assert lookup.catalog.names == ULTRA_LADDER
    assert lookup.warnings == ()
    # One request, whose answer the download reuses: sizes, sha256s and the commit.
    assert [record.path for record in fake_hub.requests] == [f"/api/models/{ULTRA_REPO}/revision/main"]
    assert lookup.listing is not None and lookup.listing.commit == fake_hub.repos[ULTRA_REPO].sha
    first = lookup.catalog.find("UD-IQ3_XXS").files[0]
    assert lookup.listing.find(first).sha256 == fake_hub.repos[ULTRA_REPO].sha256_of(first)  # type: ignore[union-attr]


def test_load_catalog_falls_back_to_the_cache_when_the_hub_is_unreachable(tmp_path: Path) -> None:
    make_cache(tmp_path, ULTRA_REPO, {"UD-Q2_K_XL/M-UD-Q2_K_XL-00001-of-00002.gguf": b"GGUF1234",
                                      "UD-Q2_K_XL/M-UD-Q2_K_XL-00002-of-00002.gguf": b"12345"})  # fmt: skip
    lookup = load_catalog(ULTRA_REPO, endpoint=f"http://127.0.0.1:{free_port()}", cache_dir=tmp_path, environ={})
    assert lookup.catalog.source == "cache"
    assert lookup.catalog.find("UD-Q2_K_XL").size_bytes == 13
    assert lookup.listing is None
    assert len(lookup.warnings) == 1
    assert lookup.warnings[0].startswith("the Hugging Face Hub could not be reached (127.0.0.1:")
    assert lookup.warnings[0].endswith("refused the connection): using the local cache")


@pytest.mark.parametrize("status", [503, 429])
def test_load_catalog_treats_a_busy_or_broken_hub_as_unreachable(
    fake_hub: FakeHub, tmp_path: Path, status: int
) -> None:
    ultra_on(fake_hub)
    fake_hub.add_fault(ULTRA_REPO, API, Fault(status=status))
    lookup = load_catalog(ULTRA_REPO, endpoint=fake_hub.url, cache_dir=tmp_path, environ={})
    assert lookup.catalog.source == "builtin"
    assert lookup.warnings[0].startswith("the Hugging Face Hub could not be reached (")
    assert f"{status} " in lookup.warnings[0]  # "... '503 Service Unavailable' for url ...", "429 Too Many ..."


def test_offline_mode_never_asks_the_hub(fake_hub: FakeHub, tmp_path: Path) -> None:
    ultra_on(fake_hub)
    lookup = load_catalog(ULTRA_REPO, endpoint=fake_hub.url, cache_dir=tmp_path, environ={"HF_HUB_OFFLINE": "1"})
    assert fake_hub.requests == []
    assert lookup.catalog.source == "builtin"
    assert lookup.warnings[0].startswith("HF_HUB_OFFLINE is set")


def test_repository_the_hub_does_not_know_is_an_error_not_a_fallback(fake_hub: FakeHub, tmp_path: Path) -> None:
    ultra_on(fake_hub)
    with pytest.raises(HubRepoNotFound) as caught:
        load_catalog(ULTRA_REPO + "-typo", endpoint=fake_hub.url, cache_dir=tmp_path, environ={})
    assert caught.value.endpoint == fake_hub.url
    code, message = describe(caught.value)
    assert code == EXIT_NOT_FOUND
    assert message.startswith(f"repo {ULTRA_REPO}-typo was not found on {fake_hub.url}")


def test_a_gated_repository_is_listed_without_a_token(fake_hub: FakeHub, tmp_path: Path) -> None:
    """The Hub lists a gated repo to anyone (only its files need access): plan shows what would fit,
    and the download says how to get access (tests/test_download.py)."""
    ultra_on(fake_hub, "nvidia/gated-GGUF")
    fake_hub.repos["nvidia/gated-GGUF"].gated = True
    lookup = load_catalog("nvidia/gated-GGUF", endpoint=fake_hub.url, cache_dir=tmp_path, environ={})
    assert lookup.listing is not None and lookup.listing.gated
    assert lookup.catalog.names == ULTRA_LADDER


def test_other_client_errors_are_reported(fake_hub: FakeHub, tmp_path: Path) -> None:
    ultra_on(fake_hub)
    fake_hub.add_fault(ULTRA_REPO, API, Fault(status=400))
    with pytest.raises(HubRequestFailed) as caught:
        load_catalog(ULTRA_REPO, endpoint=fake_hub.url, cache_dir=tmp_path, environ={})
    assert caught.value.status == 400


@pytest.mark.parametrize(("value", "offline"), [("1", True), ("true", True), ("ON", True), ("0", False), ("", False)])
def test_hub_offline(value: str, offline: bool) -> None:
    assert hub_offline({"HF_HUB_OFFLINE": value}) is offline


def test_cache_listing_skips_unfinished_downloads(tmp_path: Path) -> None:
    snapshot = make_cache(tmp_path, ULTRA_REPO, {"UD-IQ1_S/M-UD-IQ1_S-00001-of-00002.gguf": b"GGUF",
                                                 "README.md": b"# readme"})  # fmt: skip
    # A link whose blob is still downloading (or was deleted) does not count.
    os.symlink("../../blobs/missing.incomplete", snapshot / "UD-IQ1_S" / "M-UD-IQ1_S-00002-of-00002.gguf")
    listed = list_cached_files(ULTRA_REPO, cache_dir=tmp_path)
    assert listed == [ListingEntry("README.md", 8), ListingEntry("UD-IQ1_S/M-UD-IQ1_S-00001-of-00002.gguf", 4)]


def test_cache_listing_matches_the_repo_case_insensitively(tmp_path: Path) -> None:
    make_cache(tmp_path, ULTRA_REPO.lower(), {"M-Q8_0.gguf": b"GGUF"})
    assert list_cached_files(ULTRA_REPO, cache_dir=tmp_path) == [ListingEntry("M-Q8_0.gguf", 4)]


def test_cache_listing_prefers_the_snapshot_refs_main_names(tmp_path: Path) -> None:
    make_cache(tmp_path, "a/b", {"M-Q8_0.gguf": b"GGUF"}, commit="b" * 40)
    repo_dir = tmp_path / "models--a--b"
    newer = repo_dir / "snapshots" / ("c" * 40)
    newer.mkdir()
    (newer / "M-Q4_0.gguf").write_bytes(b"GG")
    assert list_cached_files("a/b", cache_dir=tmp_path) == [ListingEntry("M-Q8_0.gguf", 4)]
    (repo_dir / "refs" / "main").write_text("c" * 40)
    assert list_cached_files("a/b", cache_dir=tmp_path) == [ListingEntry("M-Q4_0.gguf", 2)]


def test_cache_without_the_repo(tmp_path: Path) -> None:
    assert list_cached_files(ULTRA_REPO, cache_dir=tmp_path) is None
    assert list_cached_files(ULTRA_REPO, cache_dir=tmp_path / "no-such-dir") is None
