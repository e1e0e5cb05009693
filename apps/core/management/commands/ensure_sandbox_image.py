from django.core.management.base import BaseCommand, CommandError

from apps.core import bootstrap
from apps.sandboxes.errors import SandboxError


class Command(BaseCommand):
    help = "Pull or build (offline, from Debian packages) the configured sandbox image."

    def handle(self, *args, **options):
        try:
            self.stdout.write(bootstrap.ensure_sandbox_image(self.stdout.write))
        except SandboxError as exc:
            raise CommandError(str(exc)) from None
