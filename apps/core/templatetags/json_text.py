"""``{{ value|json_text }}``: JSON as element text, for data an htmx fragment carries.

``json_script`` emits a <script type="application/json">, and htmx with ``allowScriptTags: false``
(templates/base.html) removes every script element from swapped content, data ones too. Put the
JSON in a hidden element instead; ``textContent`` gives it back to the page's script.

Like ``json_script``, ``<``, ``>`` and ``&`` become JSON ``\\u`` escapes: with them gone the text
cannot open a tag or an entity, so it is inert in element content (quotes are harmless there).
Only for element content, never inside an attribute.
"""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

_ESCAPES = {ord("<"): "\\u003C", ord(">"): "\\u003E", ord("&"): "\\u0026"}


@register.filter
def json_text(value: Any) -> SafeString:
    return mark_safe(json.dumps(value, cls=DjangoJSONEncoder).translate(_ESCAPES))  # noqa: S308
