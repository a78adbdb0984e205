"""The footer every email carries (why they receive it, the shop's postal address, a visible unsubscribe
or stop-alert link), inserted around the body so no template can leave it out or hide it."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from plugin.emails.budget import TemplateLimitError

# Elements that, left open before the footer, would swallow or hide it.
HIDING_ELEMENTS = frozenset(
    "style script title textarea template noscript xmp iframe noembed noframes object select head "
    "plaintext svg math".split()
)
VOID_ELEMENTS = frozenset("area base br col embed hr img input link meta source track wbr".split())
HIDING_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?![.\d]*[1-9])|"
    r"(?<![-\w])(?:max-)?height\s*:\s*0(?![.\d]*[1-9])|opacity\s*:\s*0(?![.\d]*[1-9])",
    re.IGNORECASE,
)


class _OpenElements(HTMLParser):
    """The elements still open at the end of what it was fed."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, bool]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.open = [(t, hides) for t, hides in self.open if t != "head"]
        if tag in VOID_ELEMENTS:
            return
        attributes = dict(attrs)
        hides = tag in HIDING_ELEMENTS or "hidden" in attributes
        hides = hides or bool(HIDING_STYLE.search(attributes.get("style") or ""))
        self.open.append((tag, hides))

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        for index in range(len(self.open) - 1, -1, -1):
            if self.open[index][0] == tag:
                del self.open[index:]
                return


_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def with_footer(html: str, footer: str) -> str:
    """The footer inserted before the last </body> (or appended), refused if the body would hide it."""
    ends = list(_BODY_END.finditer(html))
    at = ends[-1].start() if ends else len(html)
    parser = _OpenElements()
    parser.feed(html[:at])
    if "<!--" in parser.rawdata:  # what the parser could not finish: an unclosed comment
        raise TemplateLimitError("the template leaves an HTML comment open, which would hide the footer")
    hiding = [tag for tag, hides in parser.open if hides]
    if hiding:
        raise TemplateLimitError(
            f"the template leaves <{hiding[0]}> open, which would hide the footer "
            "(the unsubscribe link and the shop's address)"
        )
    return html[:at] + footer + html[at:]
