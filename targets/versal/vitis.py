"""The installed Vitis release, the HLS flow it takes, and the platform a build targets.

Facts behind each rule (document and section, rechecked in docs/VITIS_REFERENCE.md):
- 2023.x and 2024.1 run HLS from Tcl (`vitis_hls -f run_hls.tcl`); from 2024.2 the
  documented flow is `v++ -c --mode hls --config hls_config.cfg` plus `vitis-run --mode
  hls --csim|--cosim|--package` (UG1702 2024.2 "v++ Mode HLS", "vitis-run Command"),
  and `vitis_hls` may be absent from PATH.
- sw_emu is removed in 2025.1 (UG1702 2025.1 revision history, "--package Options:
  Removed support for sw_emu"); hw_emu remains.
- a platform is a name found in $PLATFORM_REPO_PATHS or `<Vitis>/base_platforms`, or the
  path of its .xpfm (v++ --platform, UG1702; XD100 2025.2 sets PLATFORM_REPO_PATHS to
  $XILINX_VITIS/base_platforms).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ...errors import MambaflowError

# the release the generated files name when no Vitis is found (README, Makefile header)
DEFAULT_RELEASE = "2024.2"
UNIFIED_FROM = "2024.2"   # v++ --mode hls / vitis-run replace vitis_hls -f
NO_SW_EMU_FROM = "2025.1"  # sw_emu removed (UG1702 2025.1 revision history)

_VERSION_RE = re.compile(r"\bv?(20\d\d\.\d)\b")


class PlatformError(MambaflowError):
    """The Vitis platform is missing, not found, or not given where there is no default."""


def release_key(release: str) -> tuple[int, int]:
    """'2024.2' -> (2024, 2); a malformed release is a user mistake."""
    m = re.fullmatch(r"(20\d\d)\.(\d)", str(release))
    if not m:
        raise MambaflowError(f"Vitis release '{release}' is not of the form YYYY.N (e.g. 2024.2)")
    return int(m.group(1)), int(m.group(2))


def hls_flow(release: str | None) -> str:
    """'tcl' (vitis_hls -f run_hls.tcl) before 2024.2, 'unified' (v++ --mode hls) from it;
    an unknown release takes the tcl flow, which every release up to 2024.2 still runs."""
    if release is None:
        return "tcl"
    return "unified" if release_key(release) >= release_key(UNIFIED_FROM) else "tcl"


def has_sw_emu(release: str | None) -> bool:
    """Whether `v++ -t sw_emu` exists; unknown releases are not assumed to have it."""
    return release is not None and release_key(release) < release_key(NO_SW_EMU_FROM)


def hls_tools(flow: str) -> tuple[str, ...]:
    """The executables each HLS flow runs."""
    return ("vitis_hls",) if flow == "tcl" else ("v++", "vitis-run")


def parse_version(text: str) -> str | None:
    """The first 'YYYY.N' in a tool's version banner ('v++ v2025.2 (64-bit)', 'Vitis HLS ... v2023.2')."""
    m = _VERSION_RE.search(text or "")
    return m.group(1) if m else None


@dataclass(frozen=True)
class VitisInstall:
    """What `detect_vitis` found: the release (None if no banner said), the install root and
    the tool that answered."""

    release: str | None
    root: Path | None
    tool: str

    @property
    def flow(self) -> str:
        if self.release is None:  # a tool without a banner: pick the flow by what is there
            return "tcl" if Path(self.tool).name == "vitis_hls" else "unified"
        return hls_flow(self.release)

    def describe(self) -> str:
        rel = f"Vitis {self.release}" if self.release else f"Vitis (release unknown, from {self.tool})"
        how = ("unified flow: v++ -c --mode hls + vitis-run" if self.flow == "unified"
               else "Tcl flow: vitis_hls -f run_hls.tcl")
        return f"{rel} ({how}{'' if has_sw_emu(self.release) else '; hw_emu only, no sw_emu'})"


def _banner(tool: str, flag: str) -> str:
    # in a scratch directory: a tool (or a stand-in) may write logs where it runs
    with tempfile.TemporaryDirectory() as d:
        try:
            p = subprocess.run([tool, flag], cwd=d, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return ""
    return p.stdout + p.stderr


def detect_vitis(which: Callable[[str], str | None] = shutil.which,
                 env: Mapping[str, str] | None = None) -> VitisInstall | None:
    """The Vitis on PATH: `v++ --version`, else `vitis_hls -version`, else `vitis-run
    --version`; the release also comes from $XILINX_VITIS (…/2024.2/Vitis or …/Vitis/2024.2)
    when the banner has none. None when no Vitis tool is on PATH."""
    env = os.environ if env is None else env
    root = Path(env["XILINX_VITIS"]) if env.get("XILINX_VITIS") else None
    for tool, flag in (("v++", "--version"), ("vitis_hls", "-version"), ("vitis-run", "--version")):
        path = which(tool)
        if path is None:
            continue
        release = parse_version(_banner(path, flag)) or (parse_version(str(root)) if root else None)
        if root is None and Path(path).parent.name == "bin":
            root = Path(path).parent.parent
        return VitisInstall(release, root, path)
    return None


# ------------------------------------------------------------------ platforms


@dataclass(frozen=True)
class PlatformChoice:
    """The platform a project targets. `value` is what goes after `v++ --platform`.
    `explicit`: the user named it; `checked`: it was found (a path that exists, or a name in
    a platform repository); `note`: one line for the README and the build report."""

    value: str | None
    explicit: bool
    checked: bool
    note: str


def platform_dirs(vitis: VitisInstall | None, env: Mapping[str, str] | None = None) -> list[Path]:
    """Where v++ looks for a platform given by name: $PLATFORM_REPO_PATHS (':'-separated),
    then `<Vitis>/base_platforms`."""
    env = os.environ if env is None else env
    dirs = [Path(d) for d in env.get("PLATFORM_REPO_PATHS", "").split(os.pathsep) if d]
    if vitis is not None and vitis.root is not None:
        dirs.append(vitis.root / "base_platforms")
    return dirs


def find_platform(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for cand in (d / name / f"{name}.xpfm", d / f"{name}.xpfm"):
            if cand.is_file():
                return cand
    return None


def _is_path(value: str) -> bool:
    return value.endswith(".xpfm") or os.sep in value or value.startswith(".")


def no_default_platform(board, release: str | None) -> PlatformError:
    """The error for a board without a published platform (for that release)."""
    if not board.published_platforms:
        return PlatformError(f"board {board.name}: AMD publishes no Vitis platform for it, so there is no default: "
                             "pass --platform NAME|PATH.xpfm with the platform your board runs")
    known = ", ".join(f"{r}: {n}" for r, n in board.published_platforms)
    return PlatformError(f"board {board.name}: no published platform is known for Vitis {release} "
                         f"(known: {known}): pass --platform NAME|PATH.xpfm")


def resolve_platform(board, platform: str | None, vitis: VitisInstall | None,
                     env: Mapping[str, str] | None = None) -> PlatformChoice:
    """The platform for `board`: `platform` (a NAME or a PATH.xpfm) or the board's published
    default for the installed release. Raises PlatformError with where it looked."""
    if platform is not None and not str(platform).strip():
        raise PlatformError("--platform is empty: give a platform NAME or the path of its .xpfm")
    if platform is None:
        release = vitis.release if vitis is not None else None
        name = board.default_platform(release)
        if name is None:
            raise no_default_platform(board, release)
        if release is None:
            return PlatformChoice(name, explicit=False, checked=False,
                                  note=f"platform {name}: the published {board.name} base platform of Vitis "
                                       f"{DEFAULT_RELEASE} (no Vitis here); the Makefile takes the one of the "
                                       "installed release")
        dirs = platform_dirs(vitis, env)
        found = find_platform(name, dirs)
        where = f"found at {found}" if found else \
            f"NOT found in {', '.join(map(str, dirs)) or 'any platform folder'}: install it or pass --platform"
        return PlatformChoice(name, explicit=False, checked=found is not None,
                              note=f"platform {name}: the published {board.name} base platform for Vitis "
                                   f"{release}, {where}")
    value = str(platform)
    if _is_path(value):
        p = Path(value).expanduser()
        if p.suffix != ".xpfm":
            raise PlatformError(f"platform path '{value}' does not name a .xpfm file: pass the platform's .xpfm "
                                "(e.g. .../xilinx_vck190_base_202420_1/xilinx_vck190_base_202420_1.xpfm)")
        absolute = p.resolve()
        if not absolute.is_file():
            raise PlatformError(f"platform file '{value}' does not exist (looked at {absolute}): pass the .xpfm "
                                "your board's platform ships, or its name")
        return PlatformChoice(str(absolute), explicit=True, checked=True, note=f"platform file {absolute}")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", value):
        raise PlatformError(f"platform name '{value}' has characters no platform name has: pass a NAME "
                            "(e.g. xilinx_vck190_base_202420_1) or a PATH.xpfm")
    if vitis is None:
        return PlatformChoice(value, explicit=True, checked=False,
                              note=f"platform {value} was not checked (no Vitis here to look it up); "
                                   "`make platforminfo` checks it")
    dirs = platform_dirs(vitis, env)
    found = find_platform(value, dirs)
    if found is None:
        where = ", ".join(str(d) for d in dirs) or "nowhere: $PLATFORM_REPO_PATHS is unset and the Vitis root unknown"
        raise PlatformError(f"platform '{value}' was not found (looked for {value}/{value}.xpfm and {value}.xpfm in "
                            f"{where}): install it, add its folder to $PLATFORM_REPO_PATHS, or pass its .xpfm path")
    return PlatformChoice(value, explicit=True, checked=True, note=f"platform {value} ({found})")
