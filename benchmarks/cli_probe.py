"""`heimdex probe FILE` against `ffprobe` on the same file, whole processes, in the same run.

Run with ``uv run python benchmarks/cli_probe.py [--rounds N]``. Target (issue 14): one file
within 1.5x of ffprobe's wall time. Each round runs every command once, in an order that turns
round by round, so machine noise falls on each alike; the figures are medians of the rounds and
the ratio is the median of the rounds' own ratios.

The reference is ``ffprobe -v error -show_format -show_streams -show_chapters -print_format json``,
the run the ffprobe prober makes; the benchmark checks first that ``heimdex probe --json`` (PyAV,
in-process) prints the same description as ``HEIMDEX_PROBER=ffprobe heimdex probe --json`` (the
same fields, read from that ffprobe output).

Start-up is most of either command's time, so four floors are timed beside them: ``python -c
pass``, ``python -c 'import av'`` and ``python -c 'import av, msgspec'`` (PyAV and the media
description's types: what any in-process probe must load), the last also without interpreter
shutdown (``os._exit``, as ``heimdex probe`` ends).

Python's start-up depends on compiled bytecode: an installed package has it (pip, ``uv tool``,
and the container image, which syncs with UV_COMPILE_BYTECODE=1, compile at install), a source
tree run with PYTHONDONTWRITEBYTECODE=1 compiles every module on every start. Both are measured:
"cached" gives each Python command a bytecode cache of its own (PYTHONPYCACHEPREFIX under
``.cache/``, written by the warm-up) and is what the target is judged on; "no cache" runs under
PYTHONDONTWRITEBYTECODE=1 with no cache to read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache"
MEDIA = CACHE_DIR / "bench-media"
TARGET = 1.5


def make_clip(directory: Path) -> Path:
    """10 s of 1080p H.264 + AAC, made once with ffmpeg."""
    path = directory / "cli_probe_1080p_10s.mp4"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=25:duration=10",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=10",
         "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-g", "50",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags", "+faststart", str(partial)],
        check=True, timeout=300,
    )  # fmt: skip
    partial.rename(path)
    return path


def heimdex_command() -> list[str]:
    """The console script beside this interpreter (what a user runs), else ``python -m``."""
    script = Path(sys.executable).with_name("heimdex")
    return [str(script)] if script.exists() else [sys.executable, "-m", "heimdex"]


def environment(*, cached: bool, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
    env.pop("PYTHONPYCACHEPREFIX", None)
    if cached:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(CACHE_DIR / "bench-pycache" / name)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one whole process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command} failed")
    return seconds, usage.ru_maxrss


def same_description(clip: Path) -> None:
    outputs = []
    for prober in ("pyav", "ffprobe"):
        env = {**environment(cached=False, name="check"), "HEIMDEX_PROBER": prober}
        result = subprocess.run(
            [*heimdex_command(), "probe", "--json", str(clip)],
            env=env, capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        outputs.append(result.stdout)
    if outputs[0] != outputs[1]:
        raise SystemExit(f"the two probers describe {clip} differently:\n{outputs[0]}{outputs[1]}")


def measure(clip: Path, rounds: int, *, cached: bool, other: Path | None) -> dict[str, list[float]]:
    """Wall seconds per command and round; ``other``: a second source tree's ``src``, whose
    ``heimdex probe`` runs too (``python -m heimdex`` with it first on the path)."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        raise SystemExit("benchmarks/cli_probe.py needs ffprobe on PATH")
    python = sys.executable
    commands = {
        "ffprobe": [ffprobe, "-v", "error", "-show_format", "-show_streams", "-show_chapters",
                    "-print_format", "json", str(clip)],
        "heimdex": [*heimdex_command(), "probe", "--json", str(clip)],
        "python": [python, "-c", "pass"],
        "import av": [python, "-c", "import av"],
        "av+msgspec": [python, "-c", "import av, msgspec"],
        "+ _exit": [python, "-c", "import av, msgspec, os; os._exit(0)"],
    }  # fmt: skip
    envs = {name: environment(cached=cached, name=name.replace(" ", "_")) for name in commands}
    if other is not None:
        commands["other src"] = [python, "-m", "heimdex", "probe", "--json", str(clip)]
        envs["other src"] = {**environment(cached=cached, name="other"), "PYTHONPATH": str(other)}
    for name, command in commands.items():  # warm-up: page cache, and the bytecode when cached
        run(command, envs[name])
    walls: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            walls[name].append(run(commands[name], envs[name])[0])
    return walls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=15, help="runs of each command")
    parser.add_argument(
        "--other-src", type=Path, help="also time heimdex probe from this tree's src (a before)"
    )
    args = parser.parse_args()

    clip = make_clip(MEDIA)
    same_description(clip)
    print(
        f"{clip.name}, {args.rounds} rounds, median wall ms; ratio: median of the rounds' x/ffprobe"
    )
    print(f"{'bytecode':<10}{'command':<12}{'ms':>8}{'x ffprobe':>11}")
    verdict = False
    for cached in (True, False):
        walls = measure(clip, args.rounds, cached=cached, other=args.other_src)
        reference = walls["ffprobe"]
        for name, values in walls.items():
            ratio = statistics.median(v / r for v, r in zip(values, reference, strict=True))
            label = "cached" if cached else "no cache"
            print(f"{label:<10}{name:<12}{statistics.median(values) * 1e3:>8.1f}{ratio:>11.2f}")
            if cached and name == "heimdex":
                verdict = ratio <= TARGET
    print(f"target heimdex probe <= {TARGET}x ffprobe (bytecode cached): "
          f"{'met' if verdict else 'NOT met'}")  # fmt: skip
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
