"""Data from where people keep it: compressed files, folders laid out like a dataset
repository, Hugging Face dataset ids from a local cache with the network refused,
several datasets mixed into one run, and the CLI's --data/--split/--subset."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import shutil
import time
from pathlib import Path

import pytest

from backend.data.loading import DataFormat, DatasetError, load_dataset_file
from backend.runs.config import default_config

REPO = "acme/tiny-prefs"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def pairs(n: int, start: int = 0, tag: str = "") -> list[dict]:
    return [{"prompt": f"{tag}Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad {i}."}
            for i in range(start, start + n)]


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jsonl_bytes(rows))
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return path


# ------------------------------------------------------------ compressed files


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("suffix, pack", [
    (".jsonl.gz", gzip.compress), (".jsonl.bz2", bz2.compress), (".jsonl.xz", lzma.compress), (".jsonl.zst", _zstd),
])
def test_compressed_json_lines_read_as_the_plain_file(tmp_path, suffix, pack):
    rows = pairs(12)
    path = tmp_path / f"train{suffix}"
    path.write_bytes(pack(jsonl_bytes(rows)))
    loaded = load_dataset_file(path)
    assert loaded.format is DataFormat.PREFERENCE
    assert loaded.dataset.to_list() == rows
    assert "JSON Lines (" in loaded.source_kind


def test_compressed_csv_and_json_document(tmp_path):
    (tmp_path / "rows.csv.gz").write_bytes(gzip.compress(b"prompt,completion\nHi?,Hello.\nBye?,Goodbye.\n"))
    assert load_dataset_file(tmp_path / "rows.csv.gz").dataset.to_list() == [
        {"prompt": "Hi?", "completion": "Hello."}, {"prompt": "Bye?", "completion": "Goodbye."}]
    (tmp_path / "rows.json.gz").write_bytes(gzip.compress(json.dumps(pairs(3)).encode()))
    assert load_dataset_file(tmp_path / "rows.json.gz").rows_kept == 3


def test_hh_rlhf_style_train_jsonl_gz_loads_as_pairs(tmp_path):
    # Anthropic's HH-RLHF: whole transcripts in chosen and rejected, gzip-compressed.
    rows = [{"chosen": f"\n\nHuman: What is {i}+{i}?\n\nAssistant: It is {2 * i}.",
             "rejected": f"\n\nHuman: What is {i}+{i}?\n\nAssistant: No idea."} for i in range(8)]
    (tmp_path / "train.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(rows)))
    loaded = load_dataset_file(tmp_path / "train.jsonl.gz")
    assert loaded.format.is_paired_preference and loaded.rows_kept == 8
    first = loaded.dataset[0]
    assert "It is 0." in json.dumps(first["chosen"]) and "No idea." in json.dumps(first["rejected"])


def test_compressed_file_cut_off_is_refused_naming_file_and_line(tmp_path):
    data = gzip.compress(jsonl_bytes(pairs(2000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError) as caught:
        load_dataset_file(path)
    err = caught.value
    assert err.path == str(path) and err.line and err.line > 1
    assert "damaged or cut off" in str(err) and "cut.jsonl.gz" in str(err)


def test_compressed_parquet_is_refused_with_advice(tmp_path):
    write_parquet(tmp_path / "rows.parquet", pairs(2))
    (tmp_path / "rows.parquet.gz").write_bytes(gzip.compress((tmp_path / "rows.parquet").read_bytes()))
    with pytest.raises(DatasetError, match="compressed inside already"):
        load_dataset_file(tmp_path / "rows.parquet.gz")


# ------------------------------------------------------- dataset-repository folders


def test_sharded_parquet_repository_folder_loads_train_and_holds_out_test(tmp_path):
    repo = tmp_path / "repo"
    write_parquet(repo / "data" / "train-00000-of-00002.parquet", pairs(6))
    write_parquet(repo / "data" / "train-00001-of-00002.parquet", pairs(5, start=6))
    write_parquet(repo / "data" / "test-00000-of-00001.parquet", pairs(3, tag="held "))
    (repo / "README.md").write_text("---\nlicense: mit\n---\n")
    loaded = load_dataset_file(repo)
    assert loaded.rows_kept == 11 and loaded.split == "train" and loaded.splits == ["train", "test"]
    assert [r["prompt"] for r in loaded.dataset][:7] == [f"Question {i}?" for i in range(7)]
    assert loaded.heldout is not None and loaded.heldout.split == "test"
    assert [r["prompt"] for r in loaded.heldout.dataset] == [f"held Question {i}?" for i in range(3)]
    assert any("2 files as the train split" in n for n in loaded.notes)
    assert any("test split (3 rows) is held out" in n for n in loaded.notes)
    assert load_dataset_file(repo, eval_split="none").heldout is None
    assert load_dataset_file(repo, split="test", eval_split="none").rows_kept == 3


def test_train_and_test_jsonl_folder_and_a_bad_line_names_its_file(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", pairs(4))
    (tmp_path / "test.jsonl").write_bytes(jsonl_bytes(pairs(2, tag="t")) + b"{broken\n")
    loaded = load_dataset_file(tmp_path)
    assert loaded.rows_kept == 4 and loaded.heldout.rows_kept == 2
    dropped = loaded.heldout.dropped
    assert [(d.line, d.code) for d in dropped] == [(3, "invalid_json")]


def test_bad_line_in_a_later_shard_names_the_member_file(tmp_path):
    write_jsonl(tmp_path / "train" / "part-0.jsonl", pairs(3))
    (tmp_path / "train" / "part-1.jsonl").write_bytes(jsonl_bytes(pairs(2, start=3)) + b"{nope\n")
    loaded = load_dataset_file(tmp_path)
    assert loaded.rows_kept == 5
    assert len(loaded.dropped) == 1 and loaded.dropped[0].line == 3
    assert "train/part-1.jsonl" in loaded.dropped[0].reason


def test_shards_whose_columns_disagree_are_refused_naming_the_shard(tmp_path):
    write_parquet(tmp_path / "data" / "train-00000-of-00002.parquet", pairs(2))
    write_parquet(tmp_path / "data" / "train-00001-of-00002.parquet", [{"text": "plain"}])
    with pytest.raises(DatasetError) as caught:
        load_dataset_file(tmp_path)
    assert caught.value.path.endswith("train-00001-of-00002.parquet")
    assert "differ from those of data/train-00000-of-00002.parquet" in str(caught.value)


def test_missing_split_and_wrong_held_out_split_are_named(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", pairs(3))
    write_jsonl(tmp_path / "test.jsonl", pairs(2))
    with pytest.raises(DatasetError, match="has no split 'validation'; it has train, test"):
        load_dataset_file(tmp_path, split="validation")
    with pytest.raises(DatasetError, match="held-out split 'dev' does not exist; the dataset has train, test"):
        load_dataset_file(tmp_path, eval_split="dev")


# ------------------------------------------------------------------- hub ids


def fill_datasets_cache(cache: Path, splits: dict[str, list[dict]]) -> None:
    """What `datasets` leaves in its cache after ``load_dataset(REPO)`` online:
    ``acme___tiny-prefs/default/0.0.0/<commit>/`` with one Arrow file per split."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = {name: str(write_parquet(cache.parent / "upload" / f"{name}.parquet", rows))
             for name, rows in splits.items()}
    builder = Parquet(cache_dir=str(cache), dataset_name="tiny-prefs", config_name="default", hash=COMMIT,
                      data_files=files)
    builder.download_and_prepare()
    built = next((cache / "tiny-prefs").glob("default*"))
    (cache / "acme___tiny-prefs").mkdir()
    shutil.move(str(built), str(cache / "acme___tiny-prefs" / "default"))


@pytest.fixture
def hub_caches(tmp_path, monkeypatch):
    """Empty `datasets` and hub caches for this test (also for worker processes it starts)."""
    import datasets
    import huggingface_hub.constants

    ds_cache, hub_cache = tmp_path / "hf-datasets", tmp_path / "hf-hub"
    ds_cache.mkdir()
    hub_cache.mkdir()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(ds_cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", ds_cache)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    assert datasets.config.HF_HUB_OFFLINE, "the test command sets HF_HUB_OFFLINE=1"
    return ds_cache, hub_cache


def test_cached_hub_id_loads_offline_with_its_test_split_held_out(hub_caches):
    from backend.data.hub import list_splits, list_subsets

    fill_datasets_cache(hub_caches[0], {"train": pairs(10), "test": pairs(4, tag="held ")})
    assert list_subsets(REPO) == ["default"] and list_splits(REPO) == ["train", "test"]
    loaded = load_dataset_file(REPO)
    assert loaded.rows_kept == 10 and loaded.heldout.rows_kept == 4
    assert loaded.hub == {"id": REPO, "subset": "default", "split": "train", "revision": COMMIT,
                          "splits": ["train", "test"]}
    assert load_dataset_file(f"hf://datasets/{REPO}", split="test", eval_split="none").rows_kept == 4


def test_uncached_hub_id_offline_is_refused_at_once(hub_caches):
    started = time.monotonic()
    with pytest.raises(DatasetError) as caught:
        load_dataset_file("acme/never-downloaded")
    assert time.monotonic() - started < 2
    assert "acme/never-downloaded is not in the local cache" in str(caught.value)
    assert "HF_HUB_OFFLINE" in str(caught.value)


def test_hub_snapshot_download_is_read_as_a_dataset_folder(hub_caches):
    snapshot = hub_caches[1] / "datasets--acme--tiny-prefs" / "snapshots" / COMMIT
    write_parquet(snapshot / "data" / "train-00000-of-00001.parquet", pairs(7))
    write_parquet(snapshot / "data" / "test-00000-of-00001.parquet", pairs(2, tag="t"))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(COMMIT)
    loaded = load_dataset_file(REPO)
    assert loaded.rows_kept == 7 and loaded.heldout.rows_kept == 2
    assert loaded.hub["revision"] == COMMIT and loaded.hub["split"] == "train"


def test_unknown_hub_split_and_subset_are_named(hub_caches):
    fill_datasets_cache(hub_caches[0], {"train": pairs(3)})
    with pytest.raises(DatasetError, match="has no split 'nope'; it has train"):
        load_dataset_file(REPO, split="nope")
    with pytest.raises(DatasetError, match="has no subset 'harmless' in the local cache; cached: default"):
        load_dataset_file(REPO, subset="harmless")


def test_is_hub_id_prefers_local_paths(tmp_path, monkeypatch):
    from backend.data.hub import is_hub_id

    monkeypatch.chdir(tmp_path)
    assert is_hub_id("Anthropic/hh-rlhf") and is_hub_id("hf://datasets/Anthropic/hh-rlhf")
    assert not is_hub_id("data/train.jsonl") and not is_hub_id("pairs") and not is_hub_id("/abs/x")
    (tmp_path / "Anthropic").mkdir()
    (tmp_path / "Anthropic" / "hh-rlhf").mkdir()
    assert not is_hub_id("Anthropic/hh-rlhf")


# ------------------------------------------------------------------- mixing


def test_mix_keeps_each_share_exactly(tmp_path):
    from backend.data.run_data import load_run_data

    a = write_jsonl(tmp_path / "a.jsonl", pairs(100, tag="a "))
    b = write_jsonl(tmp_path / "b.jsonl", pairs(20, tag="b "))
    cfg = default_config("dpo", data_path=str(a), data_mix={str(b): 0.2}, eval_split="none")
    loaded = load_run_data(cfg)
    prompts = [r["prompt"] for r in loaded.dataset]
    assert len(prompts) == 100  # b's 20 rows are 20%: 80 of a's join them
    assert sum(p.startswith("b ") for p in prompts) == 20 and sum(p.startswith("a ") for p in prompts) == 80
    assert prompts[:20] != sorted(prompts[:20]) or prompts[0].startswith("b ")  # shuffled, not a then b
    assert any("Mixed 2 datasets into 100 training rows" in n for n in loaded.notes)


def test_mix_of_different_formats_is_refused_naming_both(tmp_path):
    from backend.data.run_data import load_run_data

    a = write_jsonl(tmp_path / "a.jsonl", pairs(10))
    b = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "Hi?", "completion": "Hello."}] * 3)
    cfg = default_config("dpo", data_path=str(a), data_mix={str(b): 0.5})
    with pytest.raises(DatasetError, match=r"sft.jsonl \(.*\) cannot be mixed with a.jsonl"):
        load_run_data(cfg)
    with pytest.raises(DatasetError, match="leaving none for a.jsonl"):
        load_run_data(default_config("dpo", data_path=str(a), data_mix={str(b): 0.6, "acme/other": 0.5}))


# ------------------------------------------------------------------ command line


def test_cli_inspects_a_cached_hub_split_and_keeps_the_id_in_the_config(hub_caches, capsys):
    from backend.cli.main import build_parser, config_and_problems, main

    fill_datasets_cache(hub_caches[0], {"train": pairs(6), "test": pairs(3, tag="held ")})
    assert main(["data", "inspect", REPO, "--split", "test", "--json", "--tokenizer", ""]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows_kept"] == 3
    cfg, problems = config_and_problems(build_parser().parse_args(
        ["train", "--data", REPO, "--split", "train", "--subset", "default"]))
    assert not problems and (cfg.data_path, cfg.data_split, cfg.data_subset) == (REPO, "train", "default")
    assert main(["data", "inspect", "acme/unknown"]) == 1
    assert "acme/unknown is not in the local cache" in capsys.readouterr().err


# ------------------------------------------------------------- through the worker


@pytest.mark.slow
def test_worker_trains_on_a_hub_split_and_evaluates_on_its_test_split(hub_caches, tiny_model_dir):
    from conftest import tiny_run_config

    from backend.core.events import RunFinished
    from backend.training.client import run_to_completion

    fill_datasets_cache(hub_caches[0], {"train": pairs(16), "test": pairs(3, tag="held ")})
    cfg = tiny_run_config("dpo", tiny_model_dir, Path("unused"), data_path=REPO, max_steps=2)
    run, events = run_to_completion(cfg, timeout=300)
    assert isinstance(events[-1], RunFinished), events[-1]
    held = [json.loads(line)["prompt"] for line in (run.run_dir / "eval_split.jsonl").read_text().splitlines()]
    assert sorted(held) == [f"held Question {i}?" for i in range(3)]
    source = json.loads((run.run_dir / "data_source.json").read_text())
    assert source["id"] == REPO and source["revision"] == COMMIT and source["split"] == "train"
    assert source["heldout_split"] == "test"
    assert "data_path: acme/tiny-prefs" in (run.run_dir / "config.yaml").read_text()


def test_test_split_written_differently_is_refused_naming_the_file(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", pairs(4))
    write_jsonl(tmp_path / "test.jsonl", [{"prompt": "Hi?", "completion": "Hello."}] * 2)
    with pytest.raises(DatasetError) as caught:
        load_dataset_file(tmp_path)
    assert "test.jsonl" in str(caught.value) and "chosen" in str(caught.value)
    assert load_dataset_file(tmp_path, eval_split="none").rows_kept == 4
