"""The HTML pages: ``report.html`` (``cbr apply``) and ``index.html`` (``cbr batch``).

Jinja2 templates shipped with the package (``templates/``), autoescaping on for every
value: file names and layer names are user input, so ``<img src=x onerror=alert(1)>.png``
shows as text and its link is URL-quoted. Pages are self-contained and offline: CSS and
JavaScript are inline, nothing is fetched from a network, images are linked relatively.
The small script only adds a channel selector to the filmstrip and a full-size view on
click; without it every link still opens the full-size PNG.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import quote

from cbr_cli.io.render.report_context import IndexContext, ReportContext

if TYPE_CHECKING:
    from jinja2 import Environment

__all__ = ["render_index", "render_report", "url", "warm_up"]


def url(path: str) -> str:
    """A relative file path as a URL: every character but ``/`` that is not URL-safe quoted."""
    return quote(path, safe="/")


def _percent(value: float) -> str:
    return f"{value:.1%}"


def _number(value: float) -> str:
    return f"{value:.4g}"


@lru_cache(maxsize=1)
def _environment() -> Environment:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("cbr_cli.io.render", "templates"),
        autoescape=True,  # every {{ value }}, whatever the template's name
        undefined=StrictUndefined,  # a misspelt field is an error, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["url"] = url
    env.filters["percent"] = _percent
    env.filters["number"] = _number
    return env


def warm_up() -> None:
    """Load Jinja2 and compile the templates (once per process)."""
    env = _environment()
    env.get_template("report.html.j2")
    env.get_template("index.html.j2")


def render_report(context: ReportContext) -> str:
    """``report.html`` for one ``cbr apply`` run (see :class:`ReportContext`)."""
    return _environment().get_template("report.html.j2").render(page=context)


def render_index(context: IndexContext) -> str:
    """``index.html`` for one ``cbr batch`` folder (see :class:`IndexContext`)."""
    return _environment().get_template("index.html.j2").render(page=context)
