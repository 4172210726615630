from django.contrib import admin

from .models import Event, Run, StageRun


class RunInline(admin.TabularInline):
    model = Run
    fields = ("id", "pipeline", "status", "trigger", "created_at", "duration_ms")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


class StageRunInline(admin.TabularInline):
    model = StageRun
    fields = ("stage", "status", "attempts", "started_at", "finished_at", "duration_ms", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("id", "type", "occurred_at", "published_at", "trace_id", "source")
    list_filter = ("type",)
    search_fields = ("=id", "=trace_id", "=idempotency_key")
    readonly_fields = ("id", "occurred_at", "published_at", "publish_attempts")
    inlines = [RunInline]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "pipeline", "status", "trigger", "created_at", "duration_ms")
    list_filter = ("pipeline", "status")
    search_fields = ("=id", "=event__id", "=event__trace_id")
    readonly_fields = ("id", "event", "created_at", "started_at", "finished_at", "duration_ms", "replay_of")
    inlines = [StageRunInline]


@admin.register(StageRun)
class StageRunAdmin(admin.ModelAdmin):
    list_display = ("run", "stage", "status", "attempts", "started_at", "duration_ms")
    list_filter = ("status", "stage")
    search_fields = ("=run__id",)
    raw_id_fields = ("run",)
