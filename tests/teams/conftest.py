import pytest

from apps.teams import services as team_services
from apps.teams.models import Membership
from tests.projects.factories import make_project, make_user


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


class World:
    """owner (team owner and project creator), admin, member, viewer of team Alpha; a stranger
    in team Beta; a staff admin outside both."""

    def __init__(self) -> None:
        self.owner = make_user("owner", email="owner@example.test")
        self.admin = make_user("tadmin", email="tadmin@example.test")
        self.member = make_user("member", email="member@example.test")
        self.viewer = make_user("viewer", email="viewer@example.test")
        self.stranger = make_user("stranger", email="stranger@example.test")
        self.staff = make_user("staff", is_staff=True)
        self.team = team_services.create_team(user=self.owner, name="Alpha")
        self.other_team = team_services.create_team(user=self.stranger, name="Beta")
        for user, role in ((self.admin, "admin"), (self.member, "member"), (self.viewer, "viewer")):
            Membership.objects.create(team=self.team, user=user, role=role)
        self.project = make_project(self.owner, name="Shared", team=self.team)
        self.private = make_project(self.owner, name="Private")

    def membership(self, user) -> Membership:
        return Membership.objects.get(team=self.team, user=user)


@pytest.fixture
def world(db) -> World:
    return World()
