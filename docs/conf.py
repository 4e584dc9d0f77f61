"""Sphinx configuration of the scld-aug documentation site.

Build with ``make docs`` (warnings are errors, nitpicky references):

    python -m sphinx -E -W --keep-going -n -b html docs docs/_build/html

Pages are MyST Markdown; the API reference is generated from the numpydoc docstrings. The
build imports scld_aug but never trains anything (no notebooks are executed).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scld_aug  # noqa: E402

# -- Project -----------------------------------------------------------------------------

project = "scld-aug"
author = "scld-aug developers"
copyright = "scld-aug developers"  # noqa: A001 - Sphinx's name
release = scld_aug.__version__
version = release

# -- General -----------------------------------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.mathjax",
    "sphinx_copybutton",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
# Command lines and code-like text stay as typed ("--labels-key", not an en dash).
smartquotes = False
templates_path: list[str] = []

# Broken cross-references are errors (with -W), also for names in docstrings.
nitpicky = True
# Third-party types named in docstrings and signatures. There is no intersphinx (the build
# must work offline), so these cannot be linked; everything of scld_aug's own must resolve.
nitpick_ignore_regex = [
    ("py:.*", r"(numpy|np|scipy|sp|pandas|pd|anndata|torch|optuna|mlflow|sklearn|imblearn)\..*"),
    ("py:.*", r"(ndarray|DataFrame|AnnData|BaseEstimator|TransformerMixin)"),
    ("py:class", r"BaseOverSampler|BaseSampler|SamplerMixin|OneToOneFeatureMixin"),
]

# -- MyST ----------------------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# -- API reference (autodoc + autosummary + numpydoc) ------------------------------------

# numpydoc docstrings carry the types; signatures stay short and free of unresolvable hints.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_use_plots = False

# Some docstrings name public objects by the module that defines them
# (``scld_aug.generator.SCLDGenerator``); the reference documents them where users import
# them from (``scld_aug.SCLDGenerator``). Resolve the former to the latter.
ALIASES = {
    "scld_aug.sampler.SCLDSampler": "scld_aug.SCLDSampler",
    "scld_aug.generator.SCLDGenerator": "scld_aug.SCLDGenerator",
    # The other way round: the front door is documented with the module that defines it.
    "scld_aug.augment": "scld_aug.apps.augment.augment",
}


def _resolve_alias(app, env, node, contnode):
    target = node.get("reftarget", "")
    for old, new in ALIASES.items():
        if target == old or target.startswith(old + "."):
            domain = env.domains["py"]
            return domain.resolve_xref(
                env,
                node["refdoc"],
                app.builder,
                node["reftype"],
                new + target[len(old) :],
                node,
                contnode,
            )
    return None


# -- Result files of evaluation/ included as pages ------------------------------------------

# Benchmark reports live next to their data in evaluation/results/ and are included as they
# are ({include} with :relative-images:), so the site never holds a stale copy. Their links
# are written for the repository: to CSV files, to other reports, to folders that may not
# exist yet. Rewrite them so that they work in the site and never break the build: files
# become downloads, included reports become page links, anything else plain text.
INCLUDED_PAGES = {
    "evaluation/results/baron/report.md": "/benchmarks/baron",
    "evaluation/results/pbmc/report.md": "/benchmarks/pbmc",
    "evaluation/results/experiments.md": "/benchmarks/experiments",
    "evaluation/results/gpu_check/README.md": "/benchmarks/gpu_check",
    "evaluation/results/perf/README.md": "/benchmarks/perf",
    "evaluation/results/ddp_parity/README.md": "/benchmarks/ddp_parity",
}
# Results that may not be committed yet: the page keeps its placeholder text until they are.
OPTIONAL_RESULTS = {"benchmarks/ddp_parity": "evaluation/results/ddp_parity/README.md"}
MD_LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)")


def _rewrite_links(text: str, source: Path) -> str:
    def replace(match: re.Match) -> str:
        label, target = match.group(1), match.group(2)
        if "://" in target or target.startswith(("#", "mailto:")):
            return match.group(0)
        path = (source.parent / target.split("#")[0]).resolve()
        plain = label.replace("`", "")
        try:
            in_repo = path.relative_to(ROOT).as_posix()
        except ValueError:
            return label
        if in_repo in INCLUDED_PAGES:
            return f"{{doc}}`{plain} <{INCLUDED_PAGES[in_repo]}>`"
        if in_repo.startswith("docs/") and path.suffix == ".md" and path.is_file():
            return f"{{doc}}`{plain} </{in_repo[5:-3]}>`"
        if path.is_file() and path.suffix != ".md":
            return f"{{download}}`{plain} </../{in_repo}>`"
        return f"{label} (`{in_repo}` in the repository)"

    parts, fenced = [], False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        parts.append(line if fenced else MD_LINK.sub(replace, line))
    return "".join(parts)


def _optional_results(app, docname, source):
    result = OPTIONAL_RESULTS.get(docname)
    if result is not None and (ROOT / result).is_file():
        app.env.note_dependency(str(ROOT / result))
        relative = os.path.relpath(ROOT / result, (Path(app.srcdir) / docname).parent)
        source[0] = f"```{{include}} {Path(relative).as_posix()}\n:relative-images:\n```\n"


def _include_read(app, relative_path, parent_docname, content):
    source = (Path(app.srcdir) / relative_path).resolve()
    if source.suffix == ".md" and ROOT / "evaluation" in source.parents:
        content[0] = _rewrite_links(content[0], source)


# -- Command-line help, rendered at build time from the real parser ----------------------


class CliHelp(SphinxDirective):
    """``scld-aug [command] --help`` as a literal block (argparse's own text)."""

    optional_arguments = 1

    def run(self):
        from scld_aug.apps.cli import main

        argv = [*self.arguments[0].split(), "--help"] if self.arguments else ["--help"]
        out = io.StringIO()
        previous = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "92"
        try:
            with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
                main(argv)
        finally:
            if previous is None:
                os.environ.pop("COLUMNS", None)
            else:
                os.environ["COLUMNS"] = previous
        text = out.getvalue().rstrip()
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


# -- The package's modules, rendered at build time from their docstrings --------------------


def module_summaries(package: Path = ROOT / "scld_aug") -> list[tuple[str, str]]:
    """``(name, first line of its docstring)`` of every module and subpackage directly in
    ``package`` (files read, nothing imported), in alphabetical order."""
    import ast

    entries = []
    for path in sorted(package.iterdir()):
        if path.is_dir() and (path / "__init__.py").is_file():
            name, source = f"{path.name}/", path / "__init__.py"
        elif path.suffix == ".py" and path.name != "__init__.py":
            name, source = path.name, path
        else:
            continue
        doc = ast.get_docstring(ast.parse(source.read_text())) or ""
        paragraph = " ".join(doc.strip().split("\n\n")[0].split())
        sentence = re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0]
        # Plain text: roles and double backticks of the docstrings are markup here.
        sentence = re.sub(r":[a-z]+:`~?\.?([^`]+)`", r"\1", sentence).replace("``", "")
        entries.append((name, sentence))
    return entries


class ModuleTree(SphinxDirective):
    """The modules of ``scld_aug`` with the first line of each docstring, as a literal
    block: the tree in the developer guide cannot drift from the code."""

    def run(self):
        entries = module_summaries()
        width = max(len(name) for name, _ in entries) + 2
        lines = ["scld_aug/"] + [f"  {name:<{width}}{summary}" for name, summary in entries]
        text = "\n".join(lines)
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


# -- HTML ------------------------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"scld-aug {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_sidebars = {"index": []}
html_static_path: list[str] = []
html_show_sourcelink = False
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True


def setup(app):
    app.add_directive("cli-help", CliHelp)
    app.add_directive("module-tree", ModuleTree)
    app.connect("missing-reference", _resolve_alias)
    app.connect("include-read", _include_read)
    app.connect("source-read", _optional_results)
