"""`manage.py devsetup`: the development admin user and API token that `make run` writes to var/."""
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from web.api.models import ApiToken


class Command(BaseCommand):
    help = "Creates the `admin` superuser and a development API token; writes both under var/."

    def handle(self, *args, **options):
        var = Path(settings.VAR_DIR)
        password_file, token_file = var / "dev-admin-password", var / "dev-api-token"
        User = get_user_model()
        user = User.objects.filter(username="admin").first()
        if user is None or not password_file.exists():
            password = secrets.token_urlsafe(12)
            user = user or User(username="admin", email="admin@localhost")
            user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        if not token_file.exists() or ApiToken.authenticate(token_file.read_text().strip()) is None:
            _, value = ApiToken.issue("development")
            token_file.write_text(value + "\n")
            token_file.chmod(0o600)
        self.stdout.write(f"admin password in {password_file}, API token in {token_file}")
