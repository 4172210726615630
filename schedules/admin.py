from django.contrib import admin, messages

from . import operations
from .models import ScheduleRecord, SchedulerLease


@admin.register(ScheduleRecord)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = ("name", "source", "target", "when", "paused", "next_fire_at", "last_fire_at", "last_run_status")
    list_filter = ("paused", "source", "overlap", "catch_up")
    search_fields = ("name", "pipeline", "actor")
    readonly_fields = ("source", "next_fire_at", "last_fire_at", "last_run", "buffered_fire_at", "catch_up_from",
                       "created_at", "updated_at")
    actions = ["pause", "resume", "trigger_now"]

    @admin.display(description="target")
    def target(self, obj: ScheduleRecord) -> str:
        return obj.spec().target

    @admin.display(description="when")
    def when(self, obj: ScheduleRecord) -> str:
        if obj.cron:
            return f"cron {obj.cron} ({obj.timezone})"
        if obj.interval_seconds:
            return f"every {obj.interval_seconds:g} s"
        return f"once at {obj.run_at}"

    @admin.display(description="last run")
    def last_run_status(self, obj: ScheduleRecord) -> str:
        return obj.last_run_status or "-"

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.source == "code":
            return [f.name for f in obj._meta.fields if f.name not in ("paused",)]
        return self.readonly_fields

    @admin.action(description="Pause")
    def pause(self, request, queryset):
        for record in queryset:
            operations.pause(record.name)
        messages.success(request, f"paused {queryset.count()} schedule(s)")

    @admin.action(description="Resume")
    def resume(self, request, queryset):
        for record in queryset:
            operations.resume(record.name)
        messages.success(request, f"resumed {queryset.count()} schedule(s)")

    @admin.action(description="Trigger now")
    def trigger_now(self, request, queryset):
        for record in queryset:
            operations.trigger_now(record.name)
        messages.success(request, f"triggered {queryset.count()} schedule(s)")


@admin.register(SchedulerLease)
class SchedulerLeaseAdmin(admin.ModelAdmin):
    list_display = ("name", "holder", "acquired_at", "expires_at")
