from django.contrib import admin

from .models import Comment, RunReview, ShareLink


@admin.register(RunReview)
class RunReviewAdmin(admin.ModelAdmin):
    list_display = ("run", "verdict", "verdict_by", "reviewer")
    list_filter = ("verdict",)


@admin.register(Comment)
class CommentAdmin(admin.ModelAdmin):
    list_display = ("run", "author", "anchor", "line", "seq", "created_at")


@admin.register(ShareLink)
class ShareLinkAdmin(admin.ModelAdmin):
    list_display = ("run", "token_hint", "created_by", "expires_at", "revoked_at")
    readonly_fields = ("token_hash", "token_hint")
