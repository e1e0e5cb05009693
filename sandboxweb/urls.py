from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("projects/", include("apps.projects.urls")),
    path("runs/", include("apps.runs.urls")),
    path("teams/", include("apps.teams.urls")),
    path("limits/", include("apps.limits.urls")),
    path("audit/", include("apps.audit.urls")),
    path("review/", include("apps.reviews.urls")),
    path("api/v1/", include("apps.api.urls")),
    path("settings/tokens/", include("apps.api.token_urls")),
    path("", include("apps.core.urls")),
]
