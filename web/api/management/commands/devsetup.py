"""`manage.py devsetup`: the development admin user and API token that `make run` writes to var/."""
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from pipeline import conf, write_private
from web.api.models import ApiToken


class Command(BaseCommand):
    help = "Creates the `admin` superuser and a development API token; writes both under var/."

    def handle(self, *args, **options):
        # This repository's project sets VAR_DIR; another project gets PIPELINE_VAR_DIR, else ./var.
        var = Path(getattr(settings, "VAR_DIR", None) or conf.environment("PIPELINE_VAR_DIR") or "var")
        var.mkdir(parents=True, exist_ok=True)
        password_file, token_file = var / "dev-admin-password", var / "dev-api-token"
        User = get_user_model()
        user = User.objects.filter(username="admin").first()
        if user is None or not password_file.exists():
            password = secrets.token_urlsafe(12)
            user = user or User(username="admin", email="admin@localhost")
            user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
            write_private(password_file, password + "\n")  # created 0600: never readable by others
        if not token_file.exists() or ApiToken.authenticate(token_file.read_text().strip()) is None:
            _, value = ApiToken.issue("development")
            write_private(token_file, value + "\n")
        self.stdout.write(f"admin password in {password_file}, API token in {token_file}")
