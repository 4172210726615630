from schedules import every

# The scheduler tests assert one fire per second with no gap: on a busy machine the scheduler's own
# loop can be late by more than a second, and coalescing (the default) would then fold fires into
# one. `all` fires each of them, late, within the 30 s grace.
every("tick_every_second", seconds=1, pipeline="ticks", payload={}, misfire_grace_seconds=30, catch_up="all")
