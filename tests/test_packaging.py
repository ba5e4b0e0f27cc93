"""The package works installed from a wheel, not only from the source tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("digest-*.whl")
    return built


def test_wheel_carries_the_example_project_as_package_data(wheel: Path) -> None:
    """Example config, feeds and subscribers file are inside the wheel, and no local archive."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "digest/_data/examples/digest.toml" in names
    assert "digest/_data/examples/feeds/dispatch.rss" in names
    assert "digest/_data/subscribers.example.csv" in names
    assert "digest/_data/templates/email/digest.html.j2" in names
    assert "digest/_data/templates/email/partials/article_card.html.j2" in names
    assert "digest/_data/templates/email/styles/keep.css" in names
    assert "digest/locales/es.po" in names
    assert not any("/.digest/" in name or "node_modules" in name for name in names)


def test_installed_wheel_inits_and_builds_a_project(wheel: Path, tmp_path: Path) -> None:
    """`digest init` and `build --offline` work from the installed wheel alone."""
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    project = tmp_path / "news"

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        # Run outside the source tree, so only the wheel can provide `digest`.
        return subprocess.run(
            [sys.executable, *args], env=env, cwd=tmp_path, capture_output=True, text=True
        )

    where = python("-c", "import digest; print(digest.__file__)")
    assert where.stdout.startswith(str(site))
    assert python("-m", "digest", "init", str(project)).returncode == 0
    built = python(
        "-m",
        "digest",
        "--config",
        str(project / "digest.toml"),
        "build",
        "--since",
        "2026-11-16",
        "--until",
        "2026-11-22",
        "--format",
        "json",
    )
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["id"] == "2026-W47"
    # The email, in Spanish too, from the packaged templates and catalog alone.
    config = project / "digest.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace('language = "en"', 'language = "es"'),
        encoding="utf-8",
    )
    week = ["--since", "2026-11-16", "--until", "2026-11-22"]
    email = python("-m", "digest", "--config", str(config), "build", "--offline", *week)
    assert email.returncode == 0, email.stderr
    html, _text, eml = (Path(line) for line in email.stdout.splitlines())
    assert html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "Noticia destacada" in html.read_text(encoding="utf-8")
    assert eml.read_bytes().startswith(b"From: ")
