from django.contrib import admin

from .models import Invitation, Membership, Team


class MembershipInline(admin.TabularInline):
    """Read-only: roles change on the team page, where every change is audited."""

    model = Membership
    extra = 0
    fields = ("user", "role", "created_at")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "created_by", "created_at")
    search_fields = ("name",)
    inlines = [MembershipInline]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # would remove memberships without an audit entry


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ("team", "user", "role", "status", "created_at")
    list_filter = ("status", "role")

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # invitations are answered on the Teams page, where it is audited

    def has_add_permission(self, request) -> bool:
        return False
