"""Role checks for templates: show only the actions the user may take (the views still check)."""

from __future__ import annotations

from typing import Any

from django import template

from ..selectors import can_launch

register = template.Library()


@register.filter
def launchable_by(project: Any, user: Any) -> bool:
    """``{% if run.project|launchable_by:request.user %}``: member or higher on the project."""
    return can_launch(user=user, project=project)
