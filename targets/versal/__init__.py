"""mambaflow.targets.versal: board descriptors, Vitis project generation, csynth
reports, the resource fit check, the one-shot `build` and the speculative build
(`build_speculative`: the target's verify and the draft's decode in one project)."""

from .boards import BOARDS, Board, Memory, get_board
from .build import MODES, BuildResult, build, build_main
from .fit import FitReport, check_fit
from .project import KernelSpec, ProjectSpec, StreamLink, write_project
from .reports import SynthReport, parse_csynth
from .speculative_build import SpeculativeBuildResult, build_speculative
from .vitis import PlatformChoice, PlatformError, VitisInstall, detect_vitis, resolve_platform

__all__ = ["BOARDS", "Board", "Memory", "get_board", "MODES", "BuildResult", "build", "build_main",
           "FitReport", "check_fit", "KernelSpec", "ProjectSpec", "StreamLink", "write_project",
           "SynthReport", "parse_csynth", "PlatformChoice", "PlatformError", "VitisInstall", "detect_vitis",
           "resolve_platform", "SpeculativeBuildResult", "build_speculative"]
