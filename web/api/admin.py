from django.contrib import admin, messages

from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "scope", "active", "expires_at", "created_at", "last_used_at")
    list_filter = ("scope", "active")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    fields = ("name", "scope", "active", "expires_at", "prefix", "created_at", "last_used_at")

    def save_model(self, request, obj, form, change):
        if not change:
            token, value = ApiToken.issue(obj.name, scope=obj.scope, expires_at=obj.expires_at)
            obj.pk, obj.prefix = token.pk, token.prefix
            messages.warning(request, f"Token for {obj.name!r} (shown once): {value}")
            return
        super().save_model(request, obj, form, change)
