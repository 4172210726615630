from django import forms
from django.contrib import admin

from .models import MIN_SECRET_LENGTH, WebhookSubscription, check_secret
from .targets import without_userinfo


class WebhookSubscriptionForm(forms.ModelForm):
    """The secret is write-only: the change form never renders it (not even in a password field's
    `value`); left blank there, the current secret is kept."""

    secret = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False, max_length=256,
                             help_text=f"At least {MIN_SECRET_LENGTH} characters; receivers verify "
                                       f"X-Pipeline-Signature with it. Never shown again: leave blank to keep it.")

    class Meta:
        model = WebhookSubscription
        fields = ["name", "url", "secret", "event_types", "pipelines", "active", "max_consecutive_failures",
                  "max_attempts", "consecutive_failures", "disabled_at", "disabled_reason"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.initial.pop("secret", None)  # never sent to the browser

    def clean_secret(self) -> str:
        value = self.cleaned_data.get("secret") or ""
        if not value and self.instance.pk:
            return self.instance.secret  # unchanged
        problem = check_secret(value)
        if problem:
            raise forms.ValidationError(problem)
        return value


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    form = WebhookSubscriptionForm
    list_display = ("name", "target", "active", "consecutive_failures", "max_consecutive_failures", "disabled_at")
    list_filter = ("active",)
    search_fields = ("name", "url")
    readonly_fields = ("disabled_at", "created_at", "updated_at")

    @admin.display(description="URL", ordering="url")
    def target(self, obj: WebhookSubscription) -> str:
        return without_userinfo(obj.url)
