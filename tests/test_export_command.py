"""`alignstudio export RUN --as-command`: the files it writes are read by the tools
they are for (accelerate's config loader, TRL's own parser), and `trl sft --config`
trains the exported run offline on a tiny model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from backend.cli.main import main as cli_main
from backend.export.launch_layouts import LAYOUTS
from backend.runs.folder import create_run_dir
from tests.conftest import tiny_run_config


SHOTS = os.environ.get("ALIGNSTUDIO_SHOTS")  # a folder to save the screens in, when set


def shot(widget, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        widget.grab().save(str(Path(SHOTS) / name))


def _run_folder(method, tiny_model_dir, data, **overrides) -> Path:
    return create_run_dir(tiny_run_config(method, tiny_model_dir, data, **overrides))


def _export(run_dir: Path, *extra: str) -> Path:
    assert cli_main(["export", str(run_dir), "--as-command", *extra]) == 0
    folders = sorted((run_dir / "exports").glob("command-*"))
    assert len(folders) == 1 and not list((run_dir / "exports").glob("*.writing"))
    return folders[0]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_is_an_accelerate_config_accelerate_reads(tiny_model_dir, easy_preferences, layout, capsys):
    from accelerate.commands.config.config_args import load_config_from_file

    run_dir = _run_folder("orpo", tiny_model_dir, easy_preferences)
    folder = _export(run_dir, "--layout", layout, "--processes", "4")
    loaded = load_config_from_file(str(folder / f"accelerate_{layout}.yaml"))
    assert loaded.num_processes == 4
    assert str(loaded.distributed_type).split(".")[-1] == {"ddp": "MULTI_GPU", "fsdp": "FSDP"}.get(layout, "DEEPSPEED")
    if layout.startswith("zero"):
        assert loaded.deepspeed_config["zero_stage"] == int(layout[-1])
    launch = (folder / "launch.sh").read_text()
    assert f"--accelerate-config accelerate_{layout}.yaml" in launch and os.access(folder / "launch.sh", os.X_OK)
    # ORPO has no TRL command: the studio's runner only, and the output says so.
    assert not (folder / "launch_trl.sh").exists()
    assert "TRL's command line has no orpo command" in capsys.readouterr().out


def test_dpo_config_is_parsed_by_trls_own_parser(tiny_model_dir, easy_preferences):
    from trl.scripts.dpo import make_parser

    run_dir = _run_folder("dpo", tiny_model_dir, easy_preferences, beta=0.25, loss_type="ipo")
    folder = _export(run_dir, "--layout", "zero2", "--cpu")  # bf16 (the GPU default) is refused here
    script_args, training_args, model_args, dataset_args = make_parser().parse_args_and_config(
        args=["--config", str(folder / "trl_dpo.yaml")])
    assert training_args.beta == 0.25 and training_args.loss_type == ["ipo"]
    assert model_args.load_in_4bit and model_args.use_peft and model_args.lora_r == 8
    assert model_args.model_name_or_path == str(tiny_model_dir)
    assert dataset_args.datasets[0].data_files == str(folder / "train.jsonl")
    rows = (folder / "train.jsonl").read_text().splitlines()
    assert len(rows) == 64 and set(yaml.safe_load(rows[0])) == {"prompt", "chosen", "rejected"}
    assert "trl dpo --config trl_dpo.yaml --accelerate_config accelerate_zero2.yaml" in (
        folder / "launch_trl.sh").read_text()


@pytest.mark.slow
def test_trl_sft_runs_the_exported_config_two_steps_offline(tiny_model_dir, easy_preferences):
    run_dir = _run_folder("sft", tiny_model_dir, easy_preferences, max_steps=2, quantization="4bit")
    folder = _export(run_dir, "--cpu")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    trl = Path(sys.executable).with_name("trl")
    done = subprocess.run([str(trl), "sft", "--config", "trl_sft.yaml"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    output = folder / "trl-output"
    assert (output / "adapter_model.safetensors").exists() and (output / "adapter_config.json").exists()
    # TRL's printer: one loss line per step (logging_steps 1), then the summary line.
    printed = done.stdout + done.stderr
    assert len(re.findall(r"'loss': '?[0-9.]+", printed)) == 2, printed[-3000:]
    assert "train_runtime" in printed


def test_a_folder_that_is_not_a_run_is_refused_by_name(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path), "--as-command"]) == 2
    assert f"{tmp_path} is not a run folder" in capsys.readouterr().out


def test_format_or_as_command_must_be_chosen(tiny_model_dir, easy_preferences, capsys):
    run_dir = _run_folder("sft", tiny_model_dir, easy_preferences)
    assert cli_main(["export", str(run_dir)]) == 2
    assert "--as-command" in capsys.readouterr().out


@pytest.mark.gui
def test_runs_tab_export_as_command_shows_what_to_type(qtbot, tiny_model_dir, easy_preferences):
    from app.runs.tab import RunsTab
    run_dir = _run_folder("dpo", tiny_model_dir, easy_preferences)
    tab = RunsTab()
    qtbot.addWidget(tab)
    tab.resize(1400, 700)
    tab.refresh()
    qtbot.waitUntil(lambda: tab.table.rowCount() == 1, timeout=30_000)
    assert not tab.command_button.isEnabled()
    tab.table.selectRow(0)
    assert tab.command_button.isEnabled()
    shot(tab, "runs-tab-command-button.png")
    tab.command_button.click()
    dialog = tab.command_dialog
    assert dialog.isVisible() and dialog.run_dir == run_dir
    dialog.layout_box.setCurrentIndex(dialog.layout_box.findData("fsdp"))
    dialog.processes_box.setValue(4)
    with qtbot.waitSignal(dialog.sig_exported, timeout=60_000) as blocker:
        dialog.export_button.click()
    folder = blocker.args[0].folder
    assert folder == run_dir / "exports" / "command-fsdp-4"
    text = dialog.commands_view.toPlainText()
    assert str(folder / "launch.sh") in text and str(folder / "launch_trl.sh") in text
    assert "accelerate_fsdp.yaml" in dialog.status.text() and dialog.open_button.isEnabled()
    assert yaml.safe_load((folder / "accelerate_fsdp.yaml").read_text())["num_processes"] == 4
    shot(dialog, "export-as-command.png")


@pytest.mark.gui
def test_command_dialog_names_a_run_folder_without_config(qtbot, tmp_path):
    from app.runs.command_export_dialog import CommandExportDialog

    dialog = CommandExportDialog(str(tmp_path))
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.start()
    qtbot.waitUntil(lambda: dialog.banner.isVisible(), timeout=10_000)
    assert dialog.banner.title() == "Not exported" and "has no config.yaml" in dialog.banner.text()
    assert dialog.export_button.isEnabled() and dialog.banner.details() == ""  # a refusal needs no traceback
