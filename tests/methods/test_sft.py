"""SFT's own behaviour: what it trains on and how it reaches TRL."""

from pathlib import Path

import pytest

from backend.data.formats import DataFormat, DatasetError
from backend.data.loading import dataset_for_method, load_dataset_file
from backend.methods import get_method
from backend.export.trl_cli_config import trl_cli_config
from tests.conftest import tiny_run_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "datasets"


def test_pairs_train_sft_on_their_chosen_answers():
    pairs = load_dataset_file(FIXTURES / "preference.jsonl")
    sft = dataset_for_method(pairs, "sft")
    assert sft.column_names == ["prompt", "completion"]
    assert list(sft["completion"]) == list(pairs.dataset["chosen"])


def test_thumbs_up_down_data_trains_on_its_good_answers_only(tmp_path):
    loaded = load_dataset_file(FIXTURES / "unpaired.jsonl")
    assert loaded.format is DataFormat.UNPAIRED_PREFERENCE and "sft" in loaded.supported_methods
    sft = dataset_for_method(loaded, "sft")
    assert sft.to_list() == [{"prompt": "2 + 2 =", "completion": "4"},
                             {"prompt": "Capital of Japan?", "completion": "Tokyo."}]
    bad = tmp_path / "all_bad.jsonl"
    bad.write_text('{"prompt": "Hi", "completion": "Go away.", "label": "thumbs down"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match="all_bad.jsonl: SFT: none of the 1 answers is labelled good"):
        dataset_for_method(load_dataset_file(bad), "sft")


def test_trl_command_config_carries_its_settings(tmp_path):
    cfg = tiny_run_config("sft", tmp_path, tmp_path / "d.jsonl", packing=True, completion_only_loss=False)
    keys = trl_cli_config(cfg, "model", tmp_path / "train.jsonl", tmp_path / "out")
    assert keys["packing"] is True and keys["completion_only_loss"] is False
    assert get_method("sft").trl_cli == "sft"
