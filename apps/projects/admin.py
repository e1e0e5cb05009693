from django.contrib import admin

from .models import Project, ProjectSecret


class SecretInline(admin.TabularInline):
    model = ProjectSecret
    fields = ("name", "fingerprint", "updated_at")
    readonly_fields = fields
    extra = 0
    # Deleting here would bypass the audit log: secrets change on the project form (or API).
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # values are set through the project form, encrypted


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "default_kind", "image", "archived_at", "updated_at")
    list_filter = ("default_kind", "archived_at")
    search_fields = ("name", "owner__username")
    inlines = [SecretInline]
