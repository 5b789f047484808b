"""The repository stands alone: nothing in it points outside it, and its relative links resolve.

1. No text file of the repository may cite the developers' notes that live outside it (the design notes
   and the research notes next to the checkout). A citation must be one a reader can follow: the paper
   (title, arXiv id, section, equation) or a file inside the repository.
2. Every relative markdown link ``[text](path)`` or image ``![alt](path)`` in a markdown file must name a
   file or folder of the repository (web links and pure ``#anchor`` links are not files); a link to a
   heading of a markdown file (``path.md#heading``) must name a heading that exists.

"The repository's files" are those git tracks plus new files git does not ignore, so a new document is
checked before it is committed; outside a git checkout every file under the root is used.
"""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Written in pieces so that this file does not match its own patterns.
FORBIDDEN = ("DESIGN" + ".md", "shared" + "/research", ".." + "/shared")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".cfg", ".txt", ".json", ".yml", ".yaml", ".sh", ".ini"}
TEXT_FILES_BY_NAME = {".ci/run"}  # text files without a suffix
SKIP_DIRS = {".git", ".venv", "venv", "out", "__pycache__", ".pytest_cache"}


def repository_files():
    """Paths relative to ROOT (posix strings): tracked files plus untracked files git does not ignore."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
        files = [f for f in out.decode("utf-8").split("\0") if f]
    except (OSError, subprocess.SubprocessError):
        files = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
                 if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)
                 and not any(part.endswith(".egg-info") for part in p.relative_to(ROOT).parts)]
    return sorted(f for f in files if (ROOT / f).is_file())  # a file deleted but not yet staged is gone


FILES = repository_files()
TEXT_FILES = [f for f in FILES if Path(f).suffix in TEXT_SUFFIXES or f in TEXT_FILES_BY_NAME]
MARKDOWN_FILES = [f for f in FILES if f.endswith(".md")]


def outside_references(text: str):
    """(line number, line) of every line that names one of the FORBIDDEN paths."""
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1)
            if any(f.lower() in line.lower() for f in FORBIDDEN)]


# A markdown link or image: [text](target) or [text](target "title"); the text may hold one level of
# brackets (an image inside a link).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def markdown_links(text: str):
    """Link targets outside code blocks and inline code, in order."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    return LINK.findall(text)


def is_external(target: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) is not None  # http:, https:, mailto:, ...


def heading_anchors(text: str):
    """The anchors GitHub gives the headings of a markdown text (lower case, punctuation dropped,
    spaces to hyphens, "-1", "-2", ... for repeats)."""
    anchors, seen = set(), {}
    for line in FENCE.sub("", text).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def broken_links(md_file: str, text: str, files):
    """(target, reason) for every relative link of ``text`` (the content of ``md_file``) that does not
    resolve to one of ``files`` (or a folder holding one), or to a heading that does not exist."""
    file_set = set(files)
    folders = {p.as_posix() for f in files for p in Path(f).parents}
    broken = []
    for target in markdown_links(text):
        if is_external(target):
            continue
        path, _, anchor = target.partition("#")
        path = path.split("?", 1)[0]
        if not path:  # "#anchor": a heading of this same file
            if anchor and anchor.lower() not in heading_anchors(text):
                broken.append((target, "no such heading in this file"))
            continue
        resolved = (ROOT / md_file).parent / path
        try:
            rel = resolved.resolve().relative_to(ROOT).as_posix()
        except ValueError:
            broken.append((target, "points outside the repository"))
            continue
        if rel not in file_set and rel not in folders:
            broken.append((target, "no such file in the repository"))
        elif anchor and rel.endswith(".md") and anchor.lower() not in heading_anchors(
                (ROOT / rel).read_text(encoding="utf-8")):
            broken.append((target, "no such heading in " + rel))
    return broken


def test_the_checks_see_the_repository():
    assert "README.md" in MARKDOWN_FILES and "tests/test_repository.py" in TEXT_FILES
    assert ".ci/run" in TEXT_FILES or not (ROOT / ".ci" / "run").exists()


def test_no_reference_points_outside_the_repository():
    hits = [f"  {name}:{i}: {line}" for name in TEXT_FILES
            for i, line in outside_references((ROOT / name).read_text(encoding="utf-8", errors="replace"))]
    assert not hits, ("these lines cite files that are not in the repository; cite the paper (title, arXiv "
                      "id, section, equation) or a file of the repository instead:\n" + "\n".join(hits))


def test_relative_links_resolve():
    broken = [f"  {name}: ({target}) {why}" for name in MARKDOWN_FILES
              for target, why in broken_links(name, (ROOT / name).read_text(encoding="utf-8"), FILES)]
    assert not broken, "broken relative links:\n" + "\n".join(broken)


def test_the_checks_fail_when_violated():
    """Each check flags what it should, so a passing run means something."""
    assert outside_references("see " + FORBIDDEN[0] + " Sec. 4") == [(1, "see " + FORBIDDEN[0] + " Sec. 4")]
    assert outside_references("facts in " + FORBIDDEN[1] + "/x.md")
    assert outside_references("cd " + FORBIDDEN[2])
    assert not outside_references("google-research/pix2seq; docs/results.md")
    text = ("[ok](docs/results.md) [web](https://arxiv.org/abs/2402.14797) [top](#a-heading)\n"
            "# A heading\n![img](docs/missing.png) [gone](nowhere.md) [up](../outside.md)\n"
            "`[code](not_a_link.md)`\n```\n[fenced](not_a_link_either.md)\n```\n[bad](#no-heading)\n")
    files = ["README.md", "docs/results.md"]
    assert [t for t, _ in broken_links("README.md", text, files)] == [
        "docs/missing.png", "nowhere.md", "../outside.md", "#no-heading"]
