from django.urls import path

from . import views

app_name = "teams"
urlpatterns = [
    path("", views.team_list, name="list"),
    path("new/", views.team_create, name="create"),
    path("<int:team_id>/", views.team_detail, name="detail"),
    path("<int:team_id>/invite/", views.team_invite, name="invite"),
    path("<int:team_id>/members/<int:membership_id>/role/", views.member_role, name="member_role"),
    path(
        "<int:team_id>/members/<int:membership_id>/remove/",
        views.member_remove,
        name="member_remove",
    ),
    path(
        "<int:team_id>/invitations/<int:invitation_id>/revoke/",
        views.invitation_revoke,
        name="invitation_revoke",
    ),
    path(
        "invitations/<int:invitation_id>/respond/",
        views.invitation_respond,
        name="invitation_respond",
    ),
]
