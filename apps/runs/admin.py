from django.contrib import admin

from .models import Artifact, Run


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "user", "kind", "status", "end_reason", "created_at")
    list_filter = ("status", "kind")
    search_fields = ("id", "project__name", "user__username")
    readonly_fields = [f.name for f in Run._meta.fields]


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ("id", "run", "path", "size", "created_at")
    exclude = ("content",)
    readonly_fields = ("run", "path", "size", "sha256", "created_at")
