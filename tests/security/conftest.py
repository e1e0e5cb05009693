"""Fixtures shared by the attack suite (tests/security): real Docker Engine, real runs."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.docker
