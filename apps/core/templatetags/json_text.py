"""``{{ value|json_text }}``: JSON as escaped element text, for data an htmx fragment carries.

``json_script`` emits a <script type="application/json">, and htmx with ``allowScriptTags: false``
(templates/base.html) removes every script element from swapped content, data ones too. Put the
JSON in a hidden element instead: autoescape keeps it inert, ``textContent`` gives it back.
"""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.core.serializers.json import DjangoJSONEncoder

register = template.Library()


@register.filter
def json_text(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder)  # not marked safe: autoescaped
