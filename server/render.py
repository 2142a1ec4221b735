"""Model output as safe HTML, for the chat playground.

markdown-it-py renders CommonMark (with tables and strikethrough) without raw HTML: HTML the model writes
is escaped and shows as text. nh3 (ammonia) then keeps only an allow-list of tags and attributes and only
http, https and mailto links, as a second wall. Links open in a new tab without a referrer.
"""
from __future__ import annotations

import nh3
from markdown_it import MarkdownIt

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"])

TAGS = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre",
        "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "img"}
ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "code": {"class"}, "th": {"style"},
              "td": {"style"}, "ol": {"start"}}
MAX_MARKDOWN = 2 * 1024 * 1024


def render(markdown: str) -> str:
    html = _md.render(markdown[:MAX_MARKDOWN])
    return nh3.clean(html, tags=TAGS, attributes=ATTRIBUTES, url_schemes={"http", "https", "mailto"},
                     link_rel="noopener noreferrer nofollow", strip_comments=True,
                     set_tag_attribute_values={"a": {"target": "_blank"}},
                     filter_style_properties={"text-align"})
