"""The command line says how a hub dataset's download is going, as the window's Data panel
does: `alignstudio data inspect`, `train` (while it measures the data before a run) and
`generate best-of-n`. The Hub is the fake one of test_hub_download_progress (its builder
and file fetch replaced, everything else real), called in-process through ``main``."""

from __future__ import annotations

import io
import json

import pytest

from backend.cli.main import main
from test_dataset_sources import COMMIT, REPO, hub_caches  # noqa: F401 (fixture)
from test_hub_download_progress import SPLITS, fake_hub  # noqa: F401 (fixture)


def _download_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(("Downloading ", "Preparing "))]


def test_data_inspect_prints_the_download_a_line_per_file_in_a_log(fake_hub, studio_home, capsys):
    fake_hub.chunks, fake_hub.delay = 20, 0.01  # many progress steps per file: a log must not get each
    assert main(["data", "inspect", REPO, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["rows_kept"] == SPLITS["train"]  # stdout stays the JSON alone
    lines = _download_lines(err)
    assert lines[0].startswith(f"Downloading {REPO}… 0% (0.0 of ") and lines[0].endswith("file 1 of 2")
    assert any(line.endswith("file 2 of 2") for line in lines)
    assert lines[-1] == f"Preparing {REPO} for reading (2 files downloaded)…"
    assert len(lines) <= 6, lines  # a line when a file starts or ends, not one per chunk
    assert sorted(fake_hub.fetched) == sorted(f"data/{s}-00000-of-00001.parquet" for s in SPLITS)

    # Cached now: nothing comes down and nothing is said about downloads.
    fake_hub.fetched.clear()
    assert main(["data", "inspect", REPO, "--split", "test"]) == 0
    out, err = capsys.readouterr()
    assert fake_hub.fetched == [] and _download_lines(err) == []
    assert f"Loaded {REPO}, split test" in out


def test_a_terminal_gets_one_line_rewritten_as_the_bytes_come(fake_hub):
    from backend.cli.download_lines import printing_downloads
    from backend.data.loading import load_dataset_file

    fake_hub.chunks, fake_hub.delay = 20, 0.02  # 0.4 s a file: the 0.1 s throttle lets steps within a file through
    screen = io.StringIO()
    with printing_downloads(screen, terminal=True):
        loaded = load_dataset_file(REPO)
    assert loaded.rows_kept == SPLITS["train"]
    text = screen.getvalue()
    updates = text.split("\r\033[K")[1:]
    assert len(updates) >= 6 and "\n" not in "".join(updates[:-1])  # rewritten in place
    assert any("%" in u and "file 1 of 2" in u and not u.startswith(f"Downloading {REPO}… 0%") for u in updates)
    assert text.endswith(f"Preparing {REPO} for reading (2 files downloaded)…\n")  # the line ends before others


def test_ctrl_c_during_a_download_ends_the_command_saying_what_is_kept(fake_hub, studio_home, capsys,
                                                                     monkeypatch):
    import huggingface_hub

    def interrupted(repo_id, filename, *, tqdm_class, **_kwargs):
        bar = tqdm_class(total=1000, initial=0)
        bar.update(400)
        raise KeyboardInterrupt  # what Ctrl-C raises in the main thread, mid-file

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", interrupted)
    with pytest.raises(SystemExit) as ended:
        main(["data", "inspect", REPO])
    assert ended.value.code == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "Download stopped; the files downloaded so far stay in the hub cache."
    assert "Traceback" not in err and f"Downloading {REPO}…" in err


def test_train_prints_the_download_while_measuring_the_data_before_refusing(fake_hub, studio_home, tmp_path,
                                                                            tiny_model_dir, capsys):
    runs = tmp_path / "runs"
    code = main(["train", "--data", REPO, "--model", str(tiny_model_dir), "--set", "beta=-1",
                 "--runs-dir", str(runs)])
    out, err = capsys.readouterr()
    assert code == 2 and "beta" in err and "No run was started." in err
    lines = _download_lines(err)
    assert lines and lines[0].startswith(f"Downloading {REPO}…")
    assert lines[-1] == f"Preparing {REPO} for reading (2 files downloaded)…"
    assert err.index(lines[-1]) < err.index("error: ")  # said while it happened, before the verdict
    assert not runs.exists() and out == ""


def test_best_of_n_prints_the_download_of_its_prompts(fake_hub, studio_home, tmp_path, capsys, monkeypatch):
    from backend.cli.best_of_n import default_output

    # A model that is not there: the prompts come down first, then loading the model fails.
    monkeypatch.chdir(tmp_path)
    code = main(["generate", "best-of-n", "--data", REPO, "--reward", "valid_json", "--model",
                 str(tmp_path / "no-model"), "--out", str(tmp_path / "out.jsonl")])
    out, err = capsys.readouterr()
    assert code != 0 and "Cannot generate" in out
    assert _download_lines(err)[-1] == f"Preparing {REPO} for reading (2 files downloaded)…"
    assert default_output(REPO, 4).as_posix() == "tiny-prefs.best-of-4.jsonl"  # beside nothing: here


@pytest.mark.slow
def test_train_on_a_downloaded_hub_dataset_records_its_revision(fake_hub, studio_home, tmp_path, tiny_model_dir,
                                                               capsys):
    """The worker (another process, offline) trains from what the command line downloaded."""
    runs = tmp_path / "runs"
    code = main(["train", "--method", "orpo", "--data", REPO, "--model", str(tiny_model_dir), "--steps", "2",
                 "--batch-size", "4", "--max-length", "64", "--set", "gradient_checkpointing=false",
                 "--set", "save_steps=0", "--runs-dir", str(runs), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert _download_lines(err)[-1] == f"Preparing {REPO} for reading (2 files downloaded)…"
    run_dir = next(runs.iterdir())
    source = json.loads((run_dir / "data_source.json").read_text())
    assert (source["id"], source["split"], source["revision"]) == (REPO, "train", COMMIT)
    assert source["heldout_split"] == "test" and source["rows"] == SPLITS["train"]
