"""The starter project `digest init` writes, and where the packaged data files live."""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

from digest.errors import ProjectError


def data_dir() -> Path:
    """The packaged templates and examples: inside the wheel, or the source tree when editable."""
    packaged = Path(str(files("digest"))) / "_data"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent


def starter_files() -> dict[Path, Path]:
    """What `digest init` writes: target path (relative) -> packaged source file."""
    root = data_dir()
    examples = root / "examples"
    plan = {
        Path("digest.toml"): examples / "digest.toml",
        Path(".env.example"): examples / ".env.example",
    }
    for feed in sorted((examples / "feeds").iterdir()):
        plan[Path("feeds") / feed.name] = feed
    plan[Path("subscribers.csv")] = root / "subscribers.example.csv"
    return plan


def init_project(target: Path) -> list[Path]:
    """Write a working starter project into `target`; refuse if any file would be overwritten."""
    plan = starter_files()
    existing = [target / name for name in plan if (target / name).exists()]
    if existing:
        raise ProjectError(
            f"would overwrite {', '.join(str(p) for p in existing)}",
            where=str(target),
            hint="choose an empty folder, or move those files away first",
        )
    written = []
    try:
        for name, source in plan.items():
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
            written.append(destination)
    except OSError as err:
        raise ProjectError(f"cannot write the starter project: {err}", where=str(target)) from err
    return written
