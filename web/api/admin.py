from django.contrib import admin, messages

from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "active", "created_at", "last_used_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    fields = ("name", "active", "prefix", "created_at", "last_used_at")

    def save_model(self, request, obj, form, change):
        if not change:
            token, value = ApiToken.issue(obj.name)
            obj.pk = token.pk
            messages.warning(request, f"Token for {obj.name!r} (shown once): {value}")
            return
        super().save_model(request, obj, form, change)
