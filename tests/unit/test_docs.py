"""The documentation stays true to the repository: README.md and docs/*.md.

Checked, for every page: each relative link resolves (the file, and its ``#anchor`` as GitHub
renders headings); each repository path a page names in backticks exists (``infra/local/pool.py``,
``personalize/serving/ranking.py`` under ``layers/personalize/``, ``personalize.x.y`` as a
module, and a name after it as something that module defines); each ``make <target>`` named in
code is a target of the Makefile; each docs page says when it was last checked; nothing points
outside the repository. And the README starts with the two commands that work on a fresh
machine (``make demo``, ``make test``) and links to every page of docs/.

``problems(root)`` does the checking, so the tests below can also run it on a bad sample and
see each kind of mistake reported.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOT = Path("layers/personalize")
# Top-level folders and files a path in the docs may start with (build outputs, the venv and
# S3 keys are not repository paths).
REPO_TOP = ("layers/", "functions/", "infra/", "models/", "tests/", "docs/", "requirements/", ".ci/",
            "personalize/")
REPO_FILES = ("Makefile", "template.yaml", "samconfig.toml", "pyproject.toml", ".importlinter", "README.md",
              ".gitignore")
PLACEHOLDER = re.compile(r"[<>{}*$]|\.\.\.")
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
MAKE = re.compile(r"(?:^|[\s;&|(])make\s+((?:[A-Z_]+=\S*\s+)*)([a-z][a-z0-9-]*)(?![\w*-])")  # `make x-*`: a family
LAST_CHECKED = re.compile(r"^Last checked: \d{4}-\d{2}-\d{2}\b", re.MULTILINE)
OUTSIDE = re.compile(r"\.\./shared|/work/|DESIGN\.md|AWS-LIMITS\.md|STYLE\.md|DATA\.md")


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def split_fences(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(prose lines, fenced code lines), each as (line number, text)."""
    prose, code, fenced = [], [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        (code if fenced else prose).append((number, line))
    return prose, code


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, markup and punctuation dropped,
    spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link keeps its text
    text = text.replace("`", "").replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    prose, _ = split_fences(path.read_text())
    for _, line in prose:
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            name, n = base, 0
            while name in found:  # GitHub numbers repeated headings
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def makefile_targets(root: Path) -> set[str]:
    return set(re.findall(r"^([a-z][a-z0-9-]*):", (root / "Makefile").read_text(), re.MULTILINE))


def repo_path_problem(root: Path, span: str) -> str | None:
    """Why a backticked span that names a repository path does not resolve (None: fine, or not
    a path)."""
    if " " in span or PLACEHOLDER.search(span):
        return None
    if re.fullmatch(r"personalize(\.[A-Za-z_]\w*)+", span):
        return module_problem(root, span)
    if span.startswith("personalize/"):
        target = root / PACKAGE_ROOT / span
    elif span.startswith(REPO_TOP) or span in REPO_FILES:
        target = root / span
    else:
        return None
    return None if target.exists() else f"`{span}` does not exist"


def module_problem(root: Path, dotted: str) -> str | None:
    """``personalize.a.b`` is a module or package; ``personalize.a.b.name`` also works when
    ``name`` is defined (def, class or assignment) in module ``personalize.a.b``."""
    parts = dotted.split(".")
    base = root / PACKAGE_ROOT
    for end in range(len(parts), 0, -1):
        path = base.joinpath(*parts[:end])
        module = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
        if not module.exists():
            continue
        rest = parts[end:]
        if not rest:
            return None
        if len(rest) == 1 and re.search(rf"^\s*(?:def |class )?{re.escape(rest[0])}\b", module.read_text(),
                                        re.MULTILINE):
            return None
        return f"`{dotted}`: {'.'.join(parts[:end])} defines no {'.'.join(rest)}"
    return f"`{dotted}` is not a module of the domain package"


def problems(root: Path) -> list[str]:
    """Everything untrue about the docs under ``root``, as readable lines."""
    out: list[str] = []
    docs = pages(root)
    targets = makefile_targets(root)
    anchor_cache: dict[Path, set[str]] = {}
    for page in docs:
        rel = page.relative_to(root)
        text = page.read_text()
        prose, code = split_fences(text)
        if OUTSIDE.search(text):
            out.append(f"{rel}: points outside the repository ({OUTSIDE.search(text).group(0)})")
        if page.parent == root / "docs" and not LAST_CHECKED.search("\n".join(text.splitlines()[:5])):
            out.append(f"{rel}: no 'Last checked: YYYY-MM-DD' line near the top")
        spans: list[tuple[int, str]] = []
        for number, line in prose:
            for match in LINK.finditer(CODE_SPAN.sub("", line)):  # a link inside `code` is code
                problem = link_problem(root, page, match.group(2), anchor_cache)
                if problem:
                    out.append(f"{rel}:{number}: link {match.group(2)}: {problem}")
            spans += [(number, m.group(2).strip()) for m in CODE_SPAN.finditer(line)]
        for number, span in spans:
            problem = repo_path_problem(root, span)
            if problem:
                out.append(f"{rel}:{number}: {problem}")
        for number, snippet in spans + code:
            for match in MAKE.finditer(snippet):
                if match.group(2) not in targets:
                    out.append(f"{rel}:{number}: `make {match.group(2)}` is not a Makefile target")
    out += readme_problems(root)
    return out


def link_problem(root: Path, page: Path, target: str, cache: dict[Path, set[str]]) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        return None
    file_part, _, anchor = target.partition("#")
    linked = (page.parent / file_part).resolve() if file_part else page
    try:
        linked.relative_to(root.resolve())
    except ValueError:
        return "leaves the repository"
    if not linked.exists():
        return "no such file"
    if anchor:
        if linked.suffix != ".md":
            return "an anchor into a file that is not markdown"
        if anchor not in cache.setdefault(linked, anchors(linked)):
            return f"no heading makes #{anchor} in {linked.name}"
    return None


def readme_problems(root: Path) -> list[str]:
    out = []
    text = (root / "README.md").read_text()
    first_block = re.search(r"```[a-z]*\n(.*?)```", text, re.DOTALL)
    before = text[: first_block.start()] if first_block else text
    commands = [line.split("#")[0].strip() for line in (first_block.group(1) if first_block else "").splitlines()
                if line.strip() and not line.strip().startswith("#")]
    if re.search(r"^##\s", before, re.MULTILINE) or commands[:2] != ["make demo", "make test"]:
        out.append("README.md: does not start with `make demo` and `make test` (its first code block, "
                   "before any section)")
    linked = {(root / m.group(2).split("#")[0]).resolve() for m in LINK.finditer(text)}
    for page in sorted((root / "docs").glob("*.md")):
        if page.resolve() not in linked:
            out.append(f"README.md: no link to docs/{page.name}")
    return out


# ---------------------------------------------------------------- the repository's docs


def test_the_docs_are_true_to_the_repository():
    assert problems(ROOT) == []


def test_the_docs_cover_what_a_reader_looks_for():
    names = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {"architecture.md", "contracts.md", "local-stack.md", "operations.md", "security.md", "models.md",
            "experiments.md", "testing.md", "benchmarks.md", "known-gaps.md"} <= names


# ---------------------------------------------------------------- the checker can fail


GOOD_README = """# Sample

```bash
make demo   # the story
make test   # the suite
```

Read [the design](docs/design.md#the-part).
"""
GOOD_PAGE = """# Design

Last checked: 2026-12-04

## The part

`infra/local/pool.py` and `personalize/serving/ranking.py`, `personalize.serving.ranking.candidates`;
run `make test`. [Back](../README.md)
"""


def sample(tmp_path: Path, readme: str = GOOD_README, page: str = GOOD_PAGE) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / "docs" / "design.md").write_text(page)
    (tmp_path / "Makefile").write_text("demo: ## d\n\ttrue\ntest: ## t\n\ttrue\n")
    for path in ("infra/local/pool.py", "layers/personalize/personalize/serving/ranking.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("def candidates():\n    pass\n")
    (tmp_path / "layers/personalize/personalize/__init__.py").write_text("")
    (tmp_path / "layers/personalize/personalize/serving/__init__.py").write_text("")
    return tmp_path


def test_a_good_sample_passes(tmp_path):
    assert problems(sample(tmp_path)) == []


@pytest.mark.parametrize(("readme", "page", "expected"), [
    pytest.param(GOOD_README, GOOD_PAGE.replace("[Back](../README.md)", "[Gone](gone.md)"),
                 "link gone.md: no such file", id="link-to-a-missing-file"),
    pytest.param(GOOD_README.replace("#the-part", "#no-such-part"), GOOD_PAGE,
                 "no heading makes #no-such-part", id="link-to-a-missing-anchor"),
    pytest.param(GOOD_README, GOOD_PAGE.replace("## The part", "## The whole"),
                 "no heading makes #the-part", id="heading-renamed-under-a-link"),
    pytest.param(GOOD_README, GOOD_PAGE.replace("infra/local/pool.py", "infra/local/pools.py"),
                 "`infra/local/pools.py` does not exist", id="path-that-does-not-exist"),
    pytest.param(GOOD_README, GOOD_PAGE.replace("personalize/serving/ranking.py", "personalize/serving.py"),
                 "`personalize/serving.py` does not exist", id="module-path-before-a-move"),
    pytest.param(GOOD_README, GOOD_PAGE.replace("ranking.candidates", "ranking.feature_matrix"),
                 "defines no feature_matrix", id="name-the-module-does-not-define"),
    pytest.param(GOOD_README, GOOD_PAGE.replace("personalize.serving.ranking", "personalize.state"),
                 "personalize defines no state.candidates", id="dotted-module-that-does-not-exist"),
    pytest.param(GOOD_README, GOOD_PAGE.replace("`make test`", "`make deploy ENV=dev`"),
                 "`make deploy` is not a Makefile target", id="make-target-that-does-not-exist"),
    pytest.param(GOOD_README.replace("make test   #", "make check   #"), GOOD_PAGE,
                 "does not start with `make demo` and `make test`", id="readme-without-the-two-commands"),
    pytest.param("# Sample\n\n## Intro\n\n" + GOOD_README.split("\n", 2)[2], GOOD_PAGE,
                 "does not start with `make demo` and `make test`", id="readme-commands-after-a-section"),
    pytest.param(GOOD_README.replace("Read [the design](docs/design.md#the-part).", ""), GOOD_PAGE,
                 "no link to docs/design.md", id="readme-missing-a-page"),
    pytest.param(GOOD_README, GOOD_PAGE.replace("Last checked: 2026-12-04", "Checked recently"),
                 "no 'Last checked: YYYY-MM-DD' line", id="page-without-a-date"),
    pytest.param(GOOD_README + "\nSee ../shared/DESIGN.md.\n", GOOD_PAGE,
                 "points outside the repository", id="reference-outside-the-repository"),
    pytest.param(GOOD_README, GOOD_PAGE + "\n[Out](../../elsewhere.md)\n",
                 "leaves the repository", id="link-outside-the-repository"),
])
def test_the_checker_reports_each_kind_of_mistake(tmp_path, readme, page, expected):
    found = problems(sample(tmp_path, readme, page))
    assert any(expected in problem for problem in found), found


def test_fenced_code_is_not_read_as_links_or_paths_but_its_make_targets_are(tmp_path):
    page = GOOD_PAGE + "\n```bash\n# [not a link](nowhere.md) `infra/nothing.py`\nmake nothing-here\n```\n"
    found = problems(sample(tmp_path, page=page))
    assert len(found) == 1 and found[0].endswith("`make nothing-here` is not a Makefile target"), found


def test_anchors_follow_githubs_rules():
    assert slug("`GET /recommendations?k=10[&context_item=ID]`") == "get-recommendationsk10context_itemid"
    assert slug("Ingest: nothing lost, nothing doubled") == "ingest-nothing-lost-nothing-doubled"
    assert slug("`POST /events` and `POST /server/events`") == "post-events-and-post-serverevents"
