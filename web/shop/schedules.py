"""The shop's recurring jobs."""
from schedules import every

every("stock_report_every_minute", seconds=60, pipeline="stock_report", payload={"scope": "all"})
