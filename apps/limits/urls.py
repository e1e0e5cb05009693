from django.urls import path

from . import views

app_name = "limits"
urlpatterns = [
    path("", views.manage, name="manage"),
    path("<int:policy_id>/delete/", views.delete_override, name="delete"),
    path("usage/", views.usage_page, name="usage"),
]
