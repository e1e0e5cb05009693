from django.urls import path

from . import views

app_name = "runs"
urlpatterns = [
    path("", views.history, name="history"),
    path("new/<int:project_id>/", views.launch, name="launch"),
    path("<int:run_id>/", views.detail, name="detail"),
    path("<int:run_id>/header/", views.header, name="header"),
    path("<int:run_id>/files/", views.files, name="files"),
    path("<int:run_id>/cancel/", views.cancel, name="cancel"),
    path("<int:run_id>/rerun/", views.rerun, name="rerun"),
    path("<int:run_id>/log/lines/", views.log_lines, name="log_lines"),
    path("<int:run_id>/log/search/", views.log_search, name="log_search"),
    path("<int:run_id>/log.txt", views.log_raw, name="log_raw"),
    path("<int:run_id>/artifacts.zip", views.artifacts_zip, name="artifacts_zip"),
    path(
        "<int:run_id>/artifacts/<int:artifact_id>/",
        views.artifact_view,
        name="artifact_view",
    ),
    path(
        "<int:run_id>/artifacts/<int:artifact_id>/download/",
        views.artifact_download,
        name="artifact_download",
    ),
]
