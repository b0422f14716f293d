"""The documentation holds together: links and images resolve, the README's Quick start is
what the Makefile and CI run, and no file points to a conventions document outside the
repository (the conventions live in ``docs/conventions.md``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {"results", "_build", "bench_data", "data_cache", "build", "__pycache__"}

# The documents whose relative links and images must resolve.
DOCUMENTS = [ROOT / "README.md", ROOT / "EXPERIMENTS.md", ROOT / "CHANGELOG.md"] + sorted(
    p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts
)

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_SRC = re.compile(r"""<(?:img|a)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", re.I)
_LABEL = re.compile(r"^\(([\w-]+)\)=\s*$", re.M)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, whose brackets are not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """The anchor GitHub and MyST (``myst_heading_anchors``) give a Markdown heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Heading slugs and MyST ``(label)=`` targets of a Markdown file."""
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(h) for h in _HEADING.findall(text)} | set(_LABEL.findall(text))


def relative_targets(path: Path) -> list[str]:
    """Link and image targets of ``path`` that point inside the repository."""
    text = _prose(path.read_text(encoding="utf-8"))
    targets = _LINK.findall(text) + _HTML_SRC.findall(text)
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#|//)", t, re.I)]


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """``target (why)`` for each relative link of ``path`` that does not resolve in ``root``."""
    broken = []
    for target in relative_targets(path):
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve()
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif not resolved.is_relative_to(root):
            broken.append(f"{target} (outside the repository)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading or label '{anchor}')")
    return broken


def test_link_checker_finds_broken_links(tmp_path):
    (tmp_path / "b.md").write_text("# Some Title\n\n(a-label)=\n## Other\n")
    (tmp_path / "a.md").write_text(
        "[ok](b.md) [ok](b.md#some-title) [ok](b.md#a-label) ![img](missing.png) "
        "[bad](b.md#nope) [web](https://example.org/x.md) [self](#top)\n"
        "`[code](not-a-link.md)`\n```\n[fenced](nor-this.md)\n```\n"
    )
    assert broken_links(tmp_path / "a.md", root=tmp_path) == [
        "missing.png (no such file)",
        "b.md#nope (no heading or label 'nope')",
    ]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_images_resolve(path):
    assert broken_links(path) == []


def test_readme_shows_its_figure():
    targets = relative_targets(ROOT / "README.md")
    images = [t for t in targets if t.endswith(".png")]
    assert images, "the README has no figure"
    assert all((ROOT / t).stat().st_size > 10_000 for t in images)


def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no '## {title}' section"
    return match.group(1)


def _make_targets() -> dict[str, str]:
    """Makefile target -> its prerequisites line."""
    text = (ROOT / "Makefile").read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"^([\w-]+):(?!=)(.*)$", text, re.M)}


def quick_start_commands() -> list[str]:
    section = _section((ROOT / "README.md").read_text(encoding="utf-8"), "Quick start")
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the Quick start has no bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_what_the_makefile_and_ci_run():
    commands = quick_start_commands()
    assert commands == ["make demo", "make test"]
    targets = _make_targets()
    assert {"demo", "test"} <= targets.keys()
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip().startswith("make ")
    ]
    assert "make test" in ci  # CI runs the README's test command itself, nothing weaker
    assert all(line.split()[1] in targets for line in ci)


def test_demo_installs_only_the_package():
    """``make demo`` needs no test tools or PyTorch: its install stamp installs ``-e .``."""
    text = (ROOT / "Makefile").read_text()
    targets = _make_targets()
    stamp = targets["demo"].split()[0]
    assert stamp.startswith("$(")
    recipe = re.search(rf"^{re.escape(stamp)}:.*?\n((?:\t.*\n)+)", text, re.M)
    assert recipe, f"no recipe for {stamp}"
    installs = [line for line in recipe.group(1).splitlines() if "pip install" in line]
    assert any(line.rstrip().endswith("-e .") for line in installs)
    assert not any("[" in line for line in installs)  # no extra
    main_job = re.search(r"^demo:.*\n((?:\t.*\n)+)", text, re.M).group(1)
    assert "dibe-jax train" in main_job


def _text_files():
    """The repository's text files, without virtual environments, caches and outputs."""
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [
            d
            for d in dirs
            if d not in SKIP_DIRS and not d.endswith(".egg-info") and (d == ".ci" or d[0] != ".")
        ]
        for name in files:
            path = Path(folder) / name
            if path.suffix in {".py", ".md", ".ipynb", ".toml", ".txt", ".cfg"} or name in {
                "Makefile",
                "run",
            }:
                yield path


# The project's design notes live outside the repository; the conventions are in
# docs/conventions.md. The name is spelled in two pieces so that this file does not match.
_OUTSIDE_NOTES = re.compile(r"\b" + "S" + r"PEC\b")


def test_outside_notes_pattern():
    hit = "S" + "PEC"
    for line in (f"see {hit}.md", f"{hit}'s statistic", f"({hit})", f"`{hit}.md`"):
        assert _OUTSIDE_NOTES.search(line), line
    for line in (hit + "TRUM", "a spec", "specificity", "IN" + hit + "T"):
        assert not _OUTSIDE_NOTES.search(line), line


def test_no_file_points_to_an_outside_conventions_document():
    hits = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _text_files()
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="ignore").splitlines(), 1)
        if _OUTSIDE_NOTES.search(line)
    ]
    assert hits == []


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    """``make docs`` in one test: Sphinx with warnings as errors (skipped without the extra)."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    pytest.importorskip("furo")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(ROOT / "docs"),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
