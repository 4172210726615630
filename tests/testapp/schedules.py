from schedules import every

every("tick_every_second", seconds=1, pipeline="ticks", payload={}, misfire_grace_seconds=5)
