"""The built wheel is the studio: every package and the demo files travel in it, and the
demo's first step runs from it outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _declared_packages() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def test_every_package_of_the_tree_is_listed_for_the_wheel():
    """pyproject.toml lists packages by hand (to map resources/ into the wheel): a new
    sub-package that is not listed would be missing from every non-editable install."""
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("app", "widgets", "backend")
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found <= _declared_packages(), f"add to [tool.setuptools] packages: {sorted(found - _declared_packages())}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    return next(out.glob("alignstudio-*.whl"))


def test_the_wheel_carries_the_demo(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for file in ("demo_dpo.yaml", "demo_preferences.jsonl", "demo_sft.jsonl"):
        assert f"alignstudio_resources/demo/{file}" in names
    assert any(n.startswith("backend/") for n in names) and any(n.startswith("app/") for n in names)


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_outside_the_tree(wheel, tmp_path, tiny_model_dir):
    """A fresh environment with only the wheel installed (its dependencies borrowed from this
    one, not re-downloaded) trains the demo's first step from the CLI, from another folder."""
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # The dependencies, appended after the fresh site-packages (so the wheel's own copy of
    # the studio wins over this checkout's editable install, whose hook is not loaded).
    (site / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import backend.cli.main as c; print(c.__file__); print(c.DEMO_CONFIG)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert where[0].startswith(str(site)), where
    assert where[1].startswith(str(site)) and Path(where[1]).is_file()

    out = subprocess.run(
        [str(python), "-m", "app.launcher", "train", "--model", str(tiny_model_dir), "--steps", "1",
         "--quantization", "none", "--runs-dir", str(tmp_path / "runs"), "--set", "eval_fraction=0", "--quiet"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1
    config = (run_dirs[0] / "config.yaml").read_text()
    assert "demo_preferences.jsonl" in config and str(site) in config  # the demo data, from the wheel
    assert (run_dirs[0] / "adapter").is_dir()


@pytest.mark.slow
def test_the_linux_installer_installs_a_desktop_app_and_removes_it(tmp_path):
    """installer/install.sh into a temporary prefix: its own environment with the studio (not
    this checkout), the command, a menu entry with its icon; the uninstaller removes them all
    and keeps the runs."""
    home = tmp_path / "home"
    runs_home = home / "AlignStudio"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), ALIGNSTUDIO_HOME=str(runs_home), ALIGNSTUDIO_TORCH="torch==2.13.0",
               PYTHON=sys.executable if not sys.prefix.endswith(".venv") else sys._base_executable)
    prefix, bin_dir, apps = tmp_path / "prefix", tmp_path / "bin", tmp_path / "apps"
    out = subprocess.run(["bash", str(ROOT / "installer" / "install.sh"), "--prefix", str(prefix),
                          "--bin-dir", str(bin_dir), "--apps-dir", str(apps)],
                         env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "To remove it:" in out.stdout

    command = bin_dir / "alignstudio"
    assert command.is_symlink() and command.resolve() == (prefix / "env" / "bin" / "alignstudio").resolve()
    where = subprocess.run([str(prefix / "env" / "bin" / "python"), "-c", "import backend; print(backend.__file__)"],
                           env=env, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert where.startswith(str(prefix)), where  # a real install, not this checkout
    listed = subprocess.run([str(command), "runs"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "No runs yet" in listed.stdout

    entry = (apps / "alignstudio.desktop").read_text()
    fields = dict(line.split("=", 1) for line in entry.splitlines()[1:] if "=" in line)
    assert entry.splitlines()[0] == "[Desktop Entry]"
    assert fields["Type"] == "Application" and fields["Name"] == "AlignStudio"
    assert fields["Exec"].split('"')[1] == str(prefix / "env" / "bin" / "alignstudio")
    assert Path(fields["Icon"]).is_file() and Path(fields["Icon"]).read_text().lstrip().startswith("<svg")

    runs_home.mkdir(parents=True)
    (runs_home / "keep.txt").write_text("a run")
    removed = subprocess.run(["bash", str(prefix / "uninstall.sh")], env=env, capture_output=True, text=True)
    assert removed.returncode == 0, removed.stderr
    assert not command.exists() and not (apps / "alignstudio.desktop").exists()
    assert not Path(fields["Icon"]).exists() and not prefix.exists()
    assert (runs_home / "keep.txt").read_text() == "a run"
