from django.urls import path

from . import views

app_name = "reviews"
urlpatterns = [
    path("", views.queue, name="queue"),
    path("compare/", views.compare, name="compare"),
    path("shared/<str:token>/", views.shared, name="shared"),
    path("runs/<int:run_id>/", views.panel, name="panel"),
    path("runs/<int:run_id>/comments/", views.comment_add, name="comment_add"),
    path(
        "runs/<int:run_id>/comments/<int:comment_id>/delete/",
        views.comment_delete,
        name="comment_delete",
    ),
    path("runs/<int:run_id>/verdict/", views.verdict, name="verdict"),
    path("runs/<int:run_id>/labels/", views.labels, name="labels"),
    path("runs/<int:run_id>/assign/", views.assign, name="assign"),
    path("runs/<int:run_id>/share/", views.share_create, name="share_create"),
    path("runs/<int:run_id>/share/<int:link_id>/revoke/", views.share_revoke, name="share_revoke"),
]
