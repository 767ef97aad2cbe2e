"""installer/install.ps1, the Windows installer, against installer/install.sh, the Linux one
the suite runs for real: the same steps in the same order, the same constraints file, the
same package, the same choice of PyTorch build (with Windows' one difference: PyPI's torch
is the CPU build there, so a GPU takes PyTorch's CUDA index), and an uninstaller that
removes everything the installer made but the runs.

PowerShell is not installed on this machine and none of the registries it reaches serves
it, so the script has not run here: these tests read it (a PowerShell-aware scan checks
that its strings, here-strings, sub-expressions and brackets close), run the one helper it
calls that is Python (the icon), and parse it with PowerShell's own parser where `pwsh` is
on PATH."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PS1 = (ROOT / "installer" / "install.ps1").read_text(encoding="utf-8")
SH = (ROOT / "installer" / "install.sh").read_text(encoding="utf-8")


# ------------------------------------------------------------ a PowerShell scan


def _unclosed(text: str) -> list[str]:
    """What a PowerShell script leaves open: brackets, quotes, here-strings, block comments.
    Strings are skipped (with their escapes: '' inside single quotes, a backtick inside
    double quotes), except the code of a $( ) sub-expression in a double-quoted one."""
    problems: list[str] = []
    pairs = {")": "(", "}": "{", "]": "["}
    i = 0

    def line(at: int) -> int:
        return text.count("\n", 0, at) + 1

    def skip_double(i: int) -> int:  # i is past the opening quote; returns past the closing one
        while i < len(text):
            c = text[i]
            if c == "`":
                i += 2
            elif c == '"':
                return i + 1
            elif text.startswith("$(", i):
                i = code(i + 2, ")")
            else:
                i += 1
        problems.append("a double-quoted string is not closed")
        return i

    def code(i: int, closer: str | None) -> int:  # scans code until `closer` (past it)
        depth: list[str] = []
        while i < len(text):
            c = text[i]
            if text.startswith("<#", i):
                end = text.find("#>", i + 2)
                if end < 0:
                    problems.append(f"a block comment from line {line(i)} is not closed")
                    return len(text)
                i = end + 2
            elif c == "#":
                i = text.find("\n", i) if "\n" in text[i:] else len(text)
            elif text.startswith('@"', i) or text.startswith("@'", i):
                quote = text[i + 1]
                end = text.find(f"\n{quote}@", i + 2)
                if end < 0:
                    problems.append(f"a here-string from line {line(i)} is not closed")
                    return len(text)
                i = end + 3
            elif c == "'":
                end = i + 1
                while True:
                    end = text.find("'", end)
                    if end < 0:
                        problems.append(f"a single-quoted string from line {line(i)} is not closed")
                        return len(text)
                    if text.startswith("''", end):
                        end += 2
                        continue
                    break
                i = end + 1
            elif c == '"':
                i = skip_double(i + 1)
            elif c == "`":
                i += 2
            elif c in "({[":
                depth.append(c)
                i += 1
            elif c in ")}]":
                if not depth:
                    if closer == c:
                        return i + 1
                    problems.append(f"'{c}' on line {line(i)} closes nothing")
                elif depth[-1] != pairs[c]:
                    problems.append(f"'{c}' on line {line(i)} closes '{depth[-1]}'")
                    depth.pop()
                else:
                    depth.pop()
                i += 1
            else:
                i += 1
        if depth:
            problems.append(f"{len(depth)} bracket(s) left open: {''.join(depth)}")
        if closer:
            problems.append(f"a sub-expression is not closed by '{closer}'")
        return i

    code(0, None)
    return problems


def test_the_scan_finds_what_powershell_would_refuse():
    assert _unclosed('$a = @("x", (Join-Path $b "c")) # )') == []
    assert _unclosed('Write-Host "is $($x.Count) (of $(f "y"))" \'it\'\'s\'') == []
    assert "a double-quoted string is not closed" in _unclosed('if ($a) { Write-Host "open }')
    assert "a here-string from line 1 is not closed" in _unclosed("$t = @'\nx\n'")
    assert "1 bracket(s) left open: {" in _unclosed('if ($a) { "x"')
    assert any("closes" in p for p in _unclosed('$a = @("x"]'))


def test_the_script_closes_every_string_bracket_and_comment():
    assert _unclosed(PS1) == []
    # Windows PowerShell 5.1 reads a file without a byte-order mark in the ANSI code page.
    assert PS1.isascii()


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="PowerShell (pwsh) is not installed here")
def test_powershell_parses_the_script():
    script = ("$e = $null; $t = $null; [System.Management.Automation.Language.Parser]::ParseFile("
              f"'{ROOT / 'installer' / 'install.ps1'}', [ref]$t, [ref]$e) | Out-Null; "
              "$e | ForEach-Object { $_.ToString() }; exit $e.Count")
    out = subprocess.run(["pwsh", "-NoProfile", "-Command", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------ the mirror


def test_the_studio_is_installed_alike_with_the_same_constraints():
    sh = re.search(r'pip install -q "\$SRC"(\[[^\]]*\])? -c "\$SRC/([^"]+)"', SH)
    ps = re.search(r'"install", "-q", \$Src(\[[^\]]*\])?, "-c", \(Join-Path \$Src "([^"]+)"\)', PS1)
    assert sh and ps, "each installer installs the source folder with a constraints file"
    assert ps.group(1) == sh.group(1)  # the same extras (none: the studio as the README installs it)
    assert ps.group(2).replace("\\", "/") == sh.group(2) == "installer/constraints.txt"
    assert (ROOT / sh.group(2)).is_file()


def test_the_same_pytorch_build_is_chosen_for_the_same_hardware():
    # An explicit requirement wins in both.
    assert "ALIGNSTUDIO_TORCH" in SH and '"install", "-q", $env:ALIGNSTUDIO_TORCH' in PS1
    # An NVIDIA GPU is one that `nvidia-smi -L` lists.
    assert "nvidia-smi -L" in SH and 'Test-Native "nvidia-smi" @("-L")' in PS1
    # Without one: PyTorch's CPU index, then the same pinned fallback, then pip's default.
    sh_cpu = re.search(r"pip install -q torch --index-url (\S+) --timeout 15 --retries 1", SH).group(1)
    ps_cpu = re.search(r'\$CpuIndex = "([^"]+)"', PS1).group(1)
    assert ps_cpu == sh_cpu == "https://download.pytorch.org/whl/cpu"
    assert '"torch", "--index-url", $CpuIndex, "--timeout", "15",' in PS1
    assert set(re.findall(r"torch==[\d.]+", PS1)) == set(re.findall(r"torch==[\d.]+", SH)) == {"torch==2.13.0"}
    # With one: Linux takes PyPI's default build, which carries CUDA; on Windows that one is the
    # CPU build, so the CUDA builds come from PyTorch's index, PyPI's only when none installs.
    assert 'TORCH="torch"  # PyPI\'s default build carries CUDA' in SH
    cuda = re.search(r"\$CudaIndexes = @\(([^)]*)\)", PS1).group(1)
    indexes = re.findall(r'"([^"]+)"', cuda)
    assert indexes and all(re.fullmatch(r"https://download\.pytorch\.org/whl/cu1\d\d", url) for url in indexes)
    assert indexes == sorted(indexes, reverse=True)  # newest CUDA first
    assert '"torch", "--index-url", $Index,' in PS1


def test_the_steps_come_in_the_same_order():
    steps = {  # what each step looks like in install.sh, and in install.ps1
        "python check": ("sys.version_info < (3, 10)", "sys.version_info < (3, 10)"),
        "environment": ('-m venv "$ENV"', '@("-m", "venv", $EnvDir)'),
        "pip": ("pip install -q --upgrade pip", '"pip", "install", "-q", "--upgrade", "pip"'),
        "pytorch": ('if [ -n "${ALIGNSTUDIO_TORCH', "if ($env:ALIGNSTUDIO_TORCH)"),
        "studio": ('pip install -q "$SRC"', '"install", "-q", $Src,'),
        "command": ('ln -sf "$ENV/bin/alignstudio"', '$Command = Join-Path $BinDir "alignstudio.cmd"'),
        "menu entry": ('cat > "$APPS_DIR/alignstudio.desktop"',
                       '$Shortcut = Join-Path $StartMenuDir "AlignStudio.lnk"'),
        "uninstaller": ('> "$PREFIX/uninstall.sh"', "Set-Content -LiteralPath $Uninstaller"),
    }
    for index, script in ((0, SH), (1, PS1)):
        found = [script.find(pair[index]) for pair in steps.values()]
        assert -1 not in found, [name for name, at in zip(steps, found) if at < 0]
        assert found == sorted(found), list(zip(steps, found))


def test_the_options_match_the_linux_installers():
    for option in ("--prefix", "--bin-dir", "--apps-dir"):
        assert f"{option})" in SH
    params = re.search(r"param\((.*?)\n\)", PS1, re.S).group(1)
    assert re.findall(r"\[string\]\$(\w+)", params) == ["Prefix", "BinDir", "StartMenuDir"]
    assert '(Join-Path $env:LOCALAPPDATA "AlignStudio")' in params  # the user's own, no administrator needed


def test_the_shortcut_opens_the_window_the_command_does():
    assert '$Link.TargetPath = $WindowedPy' in PS1 and '$Link.Arguments = "-m app.launcher"' in PS1
    assert '$WindowedPy = Join-Path $EnvDir "Scripts\\pythonw.exe"' in PS1
    launcher = (ROOT / "app" / "launcher.py").read_text(encoding="utf-8")
    assert 'if __name__ == "__main__":\n    sys.exit(main())' in launcher  # so `-m app.launcher` runs it
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'alignstudio = "app.launcher:main"' in pyproject  # the .cmd's alignstudio.exe is the same entry
    assert '"%~dp0..\\env\\Scripts\\alignstudio.exe"' in PS1


def test_the_uninstaller_removes_what_was_installed_and_keeps_the_runs():
    lines = re.search(r"\$Lines = @\((.*?)\n\)\n", PS1, re.S).group(1)
    removed = re.findall(r"Remove-Item (?:-LiteralPath|-Path) \$\(ConvertTo-Literal (.+?)\) ", lines)
    made = {"$Shortcut", "$Command", "$IconFile", "$UninstallKey", "$EnvDir", "$Uninstaller"}
    assert set(removed) == made, removed
    assert '$IconFile = Join-Path $Prefix "alignstudio.ico"' in PS1 and "$Uninstaller = Join-Path $Prefix" in PS1
    # The two folders go only when empty; the runs are named, never removed.
    assert "-not (Get-ChildItem -LiteralPath `$Folder -Force)" in lines
    assert "ALIGNSTUDIO_HOME" in lines and "Remove-Item" not in lines.split("ALIGNSTUDIO_HOME")[1]
    assert "HKCU:\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\AlignStudio" in PS1


def test_the_icon_helper_writes_an_ico_that_qt_reads_back(tmp_path):
    out = tmp_path / "deep" / "alignstudio.ico"
    done = subprocess.run([sys.executable, str(ROOT / "installer" / "windows_icon.py"), str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    assert data[:4] == b"\x00\x00\x01\x00" and int.from_bytes(data[4:6], "little") == 1  # an icon, one image
    from PySide6.QtGui import QImage

    image = QImage(str(out))
    assert (image.width(), image.height()) == (256, 256)
    assert image.pixelColor(128, 30).name() == "#4f46e5"  # the icon's own colour, not an empty square
    assert subprocess.run([sys.executable, str(ROOT / "installer" / "windows_icon.py")],
                          capture_output=True, timeout=60).returncode == 2
