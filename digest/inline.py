"""The inline step: move the email's CSS into style attributes, once per variant, with premailer.

Many email clients drop or ignore a <style> block, so every rule of the ordinary stylesheet is
copied onto the elements it matches. What cannot be inlined (media queries, dark mode, client
fixes) is written in a `<style data-premailer="ignore">` block, which premailer leaves alone.
Nothing is fetched: remote stylesheets are off, and cssutils' complaints are collected and
returned instead of printed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from digest.errors import TemplateError

CSSUTILS_LOGGER = "CSSUTILS"


@dataclass(frozen=True, slots=True)
class Inlined:
    html: str
    warnings: tuple[str, ...]  # what cssutils said about the stylesheet, if anything


def inline_css(html: str) -> Inlined:
    """The HTML with its inlinable CSS in style attributes; kept <style> blocks stay as written."""
    # Imported here: premailer brings requests and cssutils, a fifth of a second that commands
    # which never render (collect, serve) need not wait for.
    from premailer import Premailer

    premailer = Premailer(
        allow_network=False,  # never fetch a stylesheet, whatever a template links to
        allow_loading_external_files=False,
        disable_validation=True,  # mso-* and -webkit-* properties are not errors here
        # The templates write width, height and align attributes themselves; premailer's
        # copies from CSS ("width:100%") would overwrite the pixel widths Outlook needs.
        disable_basic_attributes=["width", "height", "align", "valign"],
        strip_important=False,
        remove_classes=False,  # the kept dark-mode and phone rules select by class
        cache_css_parsing=True,
    )
    with _collected_cssutils_messages() as messages:
        try:
            result = premailer.transform(html, pretty_print=False)
        except Exception as err:  # premailer and lxml raise many kinds; all mean the same here
            raise TemplateError(
                f"cannot inline the email's CSS: {type(err).__name__}: {err}",
                where="styles/inline.css",
            ) from err
    return Inlined(html=result, warnings=tuple(messages))


class _Collector(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _collected_cssutils_messages() -> Iterator[list[str]]:
    """cssutils logs to stderr by default; for this block, its messages go to a list instead."""
    logger = logging.getLogger(CSSUTILS_LOGGER)
    saved = (logger.handlers[:], logger.propagate, logger.level)
    messages: list[str] = []
    logger.handlers = [_Collector(messages)]
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield messages
    finally:
        logger.handlers, logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])
