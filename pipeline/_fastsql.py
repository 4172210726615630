"""Plain UPDATE statements for the per-message path. The ORM's query building costs more CPU
than the statement itself; these few updates run several times for every stage message."""
from __future__ import annotations

from typing import Any

from django.db import connections, models, router


def update(model: type[models.Model], where: dict[str, Any], values: dict[str, Any]) -> int:
    """`UPDATE <table> SET <values> WHERE <where>`; a list or tuple in `where` means IN.
    Values go through each field's own conversion, as the ORM would; returns the row count."""
    connection = connections[router.db_for_write(model)]
    meta = model._meta
    quote = connection.ops.quote_name
    assignments, params = [], []
    for name, value in values.items():
        field = meta.get_field(name)
        assignments.append(f"{quote(field.column)} = %s")
        params.append(None if value is None else field.get_db_prep_save(value, connection))
    conditions = []
    for name, value in where.items():
        field = meta.get_field(name)
        target = field.target_field if field.is_relation else field
        if isinstance(value, (list, tuple)):
            conditions.append(f"{quote(field.column)} IN ({', '.join(['%s'] * len(value))})")
            params.extend(target.get_db_prep_value(v, connection) for v in value)
        else:
            conditions.append(f"{quote(field.column)} = %s")
            params.append(target.get_db_prep_value(value, connection))
    sql = f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} WHERE {' AND '.join(conditions)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
