<#
.SYNOPSIS
Install AlignStudio as a desktop application (Windows), from this source folder.

.DESCRIPTION
    powershell -ExecutionPolicy Bypass -File installer\install.ps1 [-Prefix DIR] [-BinDir DIR] [-StartMenuDir DIR]

The Windows counterpart of installer/install.sh, step for step:
- an environment of its own in PREFIX\env (default %LOCALAPPDATA%\AlignStudio);
- PyTorch by hardware: a CUDA build where an NVIDIA GPU answers, else the CPU build (set
  ALIGNSTUDIO_TORCH to a pip requirement to choose, e.g. "torch==2.13.0"). PyPI's torch for
  Windows is the CPU build, so the CUDA builds come from PyTorch's own index;
- the studio itself with the versions the test suite passed with (installer\constraints.txt);
- the `alignstudio` command in BIN_DIR (default PREFIX\bin);
- a Start-menu shortcut with the studio's icon in START_MENU_DIR (default: the user's Start-menu
  Programs folder), and an entry in Settings > Apps;
- PREFIX\uninstall.ps1, which removes all of the above and keeps your runs (~\AlignStudio).
#>
param(
    [string]$Prefix = (Join-Path $env:LOCALAPPDATA "AlignStudio"),
    [string]$BinDir = "",
    [string]$StartMenuDir = [Environment]::GetFolderPath("Programs")
)
$ErrorActionPreference = "Stop"
Set-StrictMode -Version 2

function Invoke-Native([string]$Exe, [string[]]$Arguments) {
    # A program's failure is its exit code, which PowerShell does not stop on by itself; what it
    # writes on stderr (pip's warnings) is no failure, though "Stop" would make it one.
    $ErrorActionPreference = "Continue"
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) { throw "'$Exe $($Arguments -join ' ')' failed with exit code $LASTEXITCODE." }
}

function Test-Native([string]$Exe, [string[]]$Arguments) {
    $ErrorActionPreference = "Continue"
    try {
        & $Exe @Arguments *> $null
        return ($LASTEXITCODE -eq 0)
    } catch {
        return $false
    }
}

function ConvertTo-Literal([string]$Text) {
    # A path as a single-quoted PowerShell string, for the uninstaller written below.
    return "'" + $Text.Replace("'", "''") + "'"
}

$Src = Split-Path -Parent $PSScriptRoot
if ($env:PYTHON) {
    $Py = @($env:PYTHON)
} elseif (Get-Command py -ErrorAction SilentlyContinue) {
    $Py = @("py", "-3")  # the python.org launcher
} else {
    $Py = @("python")
}
$PyExe = $Py[0]
$PyArgs = @($Py | Select-Object -Skip 1)
if (-not (Test-Native $PyExe ($PyArgs + @("-c", "import sys; sys.exit(sys.version_info < (3, 10))")))) {
    [Console]::Error.WriteLine("AlignStudio needs Python 3.10 or newer; '$($Py -join ' ')' is not one. " +
        "Install it from python.org (or: winget install Python.Python.3.12), or set PYTHON=C:\path\to\python.exe.")
    exit 2
}

New-Item -ItemType Directory -Force -Path $Prefix | Out-Null
$Prefix = (Resolve-Path -LiteralPath $Prefix).Path
$EnvDir = Join-Path $Prefix "env"
$EnvPy = Join-Path $EnvDir "Scripts\python.exe"
$DefaultBin = -not $BinDir
if ($DefaultBin) { $BinDir = Join-Path $Prefix "bin" }
Write-Host "Installing AlignStudio into $EnvDir"
if (-not (Test-Path -LiteralPath $EnvPy)) { Invoke-Native $PyExe ($PyArgs + @("-m", "venv", $EnvDir)) }
Invoke-Native $EnvPy @("-m", "pip", "install", "-q", "--upgrade", "pip")

$CpuIndex = "https://download.pytorch.org/whl/cpu"
# One index per CUDA version, newest first: the first that has a build for this Python wins.
$CudaIndexes = @("https://download.pytorch.org/whl/cu130", "https://download.pytorch.org/whl/cu128",
                 "https://download.pytorch.org/whl/cu126")
$HasNvidia = [bool](Get-Command nvidia-smi -ErrorAction SilentlyContinue) -and (Test-Native "nvidia-smi" @("-L"))
if ($env:ALIGNSTUDIO_TORCH) {
    Write-Host "PyTorch: $env:ALIGNSTUDIO_TORCH"
    Invoke-Native $EnvPy @("-m", "pip", "install", "-q", $env:ALIGNSTUDIO_TORCH)
} elseif ($HasNvidia) {
    $Installed = $false
    foreach ($Index in $CudaIndexes) {
        Write-Host "PyTorch: a CUDA build from $Index"
        if (Test-Native $EnvPy @("-m", "pip", "install", "-q", "torch", "--index-url", $Index, "--timeout", "15",
                                 "--retries", "1")) {
            $Installed = $true
            break
        }
    }
    if (-not $Installed) {
        Write-Warning "No CUDA build of PyTorch could be installed; taking PyPI's, which trains on the CPU only."
        Invoke-Native $EnvPy @("-m", "pip", "install", "-q", "torch")
    }
} else {
    # No NVIDIA GPU: PyTorch's CPU build. Where its index cannot be reached, pip's default source is used.
    Write-Host "PyTorch: the CPU build (no NVIDIA GPU found)"
    if (-not (Test-Native $EnvPy @("-m", "pip", "install", "-q", "torch", "--index-url", $CpuIndex, "--timeout", "15",
                                   "--retries", "1"))) {
        if (-not (Test-Native $EnvPy @("-m", "pip", "install", "-q", "torch==2.13.0"))) {
            Invoke-Native $EnvPy @("-m", "pip", "install", "-q", "torch")
        }
    }
}
Invoke-Native $EnvPy @("-m", "pip", "install", "-q", $Src, "-c", (Join-Path $Src "installer\constraints.txt"))

# The command: a small .cmd beside nothing else, so BIN_DIR can go on PATH without the whole environment.
New-Item -ItemType Directory -Force -Path $BinDir | Out-Null
$Command = Join-Path $BinDir "alignstudio.cmd"
$Exe = Join-Path $EnvDir "Scripts\alignstudio.exe"
# Relative where it can be, so a user name with letters outside the code page does not matter.
$Target = if ($DefaultBin) { "%~dp0..\env\Scripts\alignstudio.exe" } else { $Exe }
Set-Content -LiteralPath $Command -Encoding ASCII -Value "@`"$Target`" %*"

# The shortcut's icon must be an .ico; the studio ships SVG, drawn into one by its own Qt.
$IconFile = Join-Path $Prefix "alignstudio.ico"
$WindowedPy = Join-Path $EnvDir "Scripts\pythonw.exe"
$Icon = $IconFile
if (-not (Test-Native $EnvPy @((Join-Path $Src "installer\windows_icon.py"), $IconFile))) { $Icon = $WindowedPy }
New-Item -ItemType Directory -Force -Path $StartMenuDir | Out-Null
$Shortcut = Join-Path $StartMenuDir "AlignStudio.lnk"
$Shell = New-Object -ComObject WScript.Shell
$Link = $Shell.CreateShortcut($Shortcut)
$Link.TargetPath = $WindowedPy  # pythonw: the window without a console behind it
$Link.Arguments = "-m app.launcher"
$Link.WorkingDirectory = $HOME
$Link.IconLocation = "$Icon,0"
$Link.Description = "Fine-tune and preference-align a language model without writing code"
$Link.Save()

# Settings > Apps lists it and offers the uninstaller.
$Uninstaller = Join-Path $Prefix "uninstall.ps1"
$UninstallKey = "HKCU:\Software\Microsoft\Windows\CurrentVersion\Uninstall\AlignStudio"
New-Item -Path $UninstallKey -Force | Out-Null
Set-ItemProperty -Path $UninstallKey -Name DisplayName -Value "AlignStudio"
Set-ItemProperty -Path $UninstallKey -Name DisplayIcon -Value $Icon
Set-ItemProperty -Path $UninstallKey -Name InstallLocation -Value $Prefix
Set-ItemProperty -Path $UninstallKey -Name UninstallString `
    -Value "powershell.exe -NoProfile -ExecutionPolicy Bypass -File `"$Uninstaller`""
Set-ItemProperty -Path $UninstallKey -Name NoModify -Value 1 -Type DWord
Set-ItemProperty -Path $UninstallKey -Name NoRepair -Value 1 -Type DWord

$Lines = @(
    "# Remove AlignStudio as installed by installer\install.ps1. Your runs and settings stay.",
    "Remove-Item -LiteralPath $(ConvertTo-Literal $Shortcut) -Force -ErrorAction SilentlyContinue",
    "Remove-Item -LiteralPath $(ConvertTo-Literal $Command) -Force -ErrorAction SilentlyContinue",
    "Remove-Item -LiteralPath $(ConvertTo-Literal $IconFile) -Force -ErrorAction SilentlyContinue",
    "Remove-Item -Path $(ConvertTo-Literal $UninstallKey) -Recurse -Force -ErrorAction SilentlyContinue",
    "Remove-Item -LiteralPath $(ConvertTo-Literal $EnvDir) -Recurse -Force",
    "Remove-Item -LiteralPath $(ConvertTo-Literal $Uninstaller) -Force",
    "foreach (`$Folder in @($(ConvertTo-Literal $BinDir), $(ConvertTo-Literal $Prefix))) {",
    "    if ((Test-Path -LiteralPath `$Folder) -and -not (Get-ChildItem -LiteralPath `$Folder -Force)) {",
    "        Remove-Item -LiteralPath `$Folder",
    "    }",
    "}",
    "`$Runs = if (`$env:ALIGNSTUDIO_HOME) { `$env:ALIGNSTUDIO_HOME } else { Join-Path `$HOME 'AlignStudio' }",
    "Write-Host `"AlignStudio removed. Your runs are still in `$Runs.`""
)
Set-Content -LiteralPath $Uninstaller -Encoding UTF8 -Value $Lines

Write-Host "Installed. Start it from the Start menu (AlignStudio) or with: $Command"
if (-not (($env:PATH -split ";") -contains $BinDir)) { Write-Host "($BinDir is not on your PATH.)" }
Write-Host "To remove it: Settings > Apps > AlignStudio, or: powershell -ExecutionPolicy Bypass -File `"$Uninstaller`""
