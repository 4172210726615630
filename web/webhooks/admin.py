from django import forms
from django.contrib import admin

from .models import WebhookSubscription


class WebhookSubscriptionForm(forms.ModelForm):
    secret = forms.CharField(widget=forms.PasswordInput(render_value=True), min_length=16, max_length=256,
                             help_text="At least 16 characters; receivers verify X-Pipeline-Signature with it.")

    class Meta:
        model = WebhookSubscription
        fields = ["name", "url", "secret", "event_types", "pipelines", "active", "max_consecutive_failures",
                  "max_attempts", "consecutive_failures", "disabled_at", "disabled_reason"]


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    form = WebhookSubscriptionForm
    list_display = ("name", "url", "active", "consecutive_failures", "max_consecutive_failures", "disabled_at")
    list_filter = ("active",)
    search_fields = ("name", "url")
    readonly_fields = ("disabled_at", "created_at", "updated_at")
