"""Sphinx directives that render polymsg's live data into the docs.

``.. polymsg-options::``
    The configuration reference (use it inside a ``---``-level section: it
    emits ``~~~`` and ``^^^`` titles): every option of every ``oslo.config.opts``
    entry point whose name starts with ``polymsg`` (core and each installed
    driver distribution), straight from its ``list_opts()``.

``.. polymsg-drivers::``
    The driver table: URL scheme, distribution and, for installed drivers,
    the capabilities their class declares.

Both build reST text and parse it, so the output looks like hand-written docs.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

OPTS_GROUP = "oslo.config.opts"


def _indent(text: str, by: str = "   ") -> list[str]:
    return [by + line if line else "" for line in text.splitlines()]


def _default(opt: Any) -> str:
    if opt.default is None:
        return "(no default)"
    if opt.default == "":
        return "(empty string)"
    if isinstance(opt.default, (list, tuple)):
        return "``" + ",".join(str(v) for v in opt.default) + "``" if opt.default else "(empty)"
    return f"``{opt.default}``"


def _type_name(opt: Any) -> str:
    type_name = getattr(opt.type, "type_name", None) or type(opt).__name__.replace("Opt", "")
    return str(type_name).lower()


def render_opt(opt: Any) -> list[str]:
    """Lines of reST describing one oslo.config option."""
    lines = [f"``{opt.dest}``", f"   :Type: {_type_name(opt)}", f"   :Default: {_default(opt)}"]
    choices = getattr(opt.type, "choices", None)
    if choices:
        lines.append("   :Choices: " + ", ".join(f"``{c}``" for c in choices))
    for bound in ("min", "max"):
        value = getattr(opt.type, bound, None)
        if value is not None:
            lines.append(f"   :{bound.title()}: ``{value}``")
    if opt.secret:
        lines.append("   :Secret: yes (never logged)")
    lines.append("")
    lines.extend(_indent(opt.help or "(undocumented)"))
    lines.append("")
    return lines


def render_namespace(name: str, groups: Iterable[tuple[str | None, Iterable[Any]]]) -> list[str]:
    """A section per config group of one ``oslo.config.opts`` namespace."""
    lines = [f"Namespace ``{name}``", "~" * (len(name) + 14), ""]
    for group, opts in groups:
        title = f"[{group or 'DEFAULT'}]"
        lines += [title, "^" * len(title), ""]
        for opt in opts:
            lines += render_opt(opt)
    return lines


class _RstDirective(SphinxDirective):
    def render(self, lines: list[str]) -> list[nodes.Node]:
        # The output depends on what is installed, not on the source: re-read
        # this page on every build.
        self.env.note_reread()
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source="<polymsg-docs>"),
                                 container)
        return list(container.children)


class OptionsDirective(_RstDirective):
    """``.. polymsg-options::`` — the configuration reference."""

    def run(self) -> list[nodes.Node]:
        found = sorted((ep for ep in entry_points(group=OPTS_GROUP)
                        if ep.name.startswith("polymsg")), key=lambda ep: ep.name)
        lines: list[str] = []
        for ep in found:
            lines += render_namespace(ep.name, ep.load()())
        return self.render(lines)


class DriversDirective(_RstDirective):
    """``.. polymsg-drivers::`` — the driver table, capabilities read from the classes."""

    def run(self) -> list[nodes.Node]:
        from polymsg import _registry

        installed = {ep.name: ep for ep in entry_points(group=_registry.NAMESPACE)}
        aliases = {v: k for k, v in _registry.ALIASES.items()}
        lines = [".. list-table::", "   :header-rows: 1", "",
                 "   * - URL scheme", "     - distribution", "     - capabilities"]
        for name, dist in _registry.DISTRIBUTIONS.items():
            scheme = f"``{name}://``"
            if name in aliases:
                scheme = f"``{aliases[name]}://`` = {scheme}"
            ep = installed.get(name)
            caps = ("*(not installed when these docs were built)*" if ep is None
                    else ", ".join(f"``{c}``" for c in sorted(ep.load().capabilities)))
            lines += [f"   * - {scheme}", f"     - ``{dist}``", f"     - {caps}"]
        return self.render(lines)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("polymsg-options", OptionsDirective)
    app.add_directive("polymsg-drivers", DriversDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
