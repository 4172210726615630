"""Public order links by a random token (issue 15), and a failed order's reason (issue 18).

The token column is added nullable, filled row by row (a callable default in AddField would give
every existing row the same value), then made unique and required."""
from django.db import migrations, models

import web.shop.models


def fill_tokens(apps, schema_editor):
    Order = apps.get_model("shop", "Order")
    for order in Order.objects.filter(public_token__isnull=True).only("pk").iterator():
        Order.objects.filter(pk=order.pk).update(public_token=web.shop.models.new_public_token())


class Migration(migrations.Migration):

    dependencies = [("shop", "0001_initial")]

    operations = [
        migrations.AddField(model_name="order", name="public_token",
                            field=models.CharField(max_length=32, null=True, editable=False)),
        migrations.RunPython(fill_tokens, migrations.RunPython.noop),
        migrations.AlterField(model_name="order", name="public_token",
                              field=models.CharField(default=web.shop.models.new_public_token, editable=False,
                                                     max_length=32, unique=True)),
        migrations.AddField(model_name="order", name="failure_reason",
                            field=models.CharField(blank=True, default="", max_length=300)),
    ]
