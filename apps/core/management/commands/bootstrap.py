from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from apps.core import bootstrap
from apps.sandboxes.errors import SandboxError


class Command(BaseCommand):
    help = "Make sure the database, Redis, Docker and sandbox image are ready; add the first admin."

    def add_arguments(self, parser):
        parser.add_argument("--skip-image", action="store_true", help="do not build/pull the image")
        parser.add_argument("--skip-admin", action="store_true", help="do not create an admin")
        parser.add_argument("--url", default="", help="the URL to print when ready")

    def handle(self, *args, **options):
        say = self.stdout.write
        try:
            say(bootstrap.ensure_database())
            call_command("migrate", interactive=False, verbosity=0)
            say("database: migrations applied")
            call_command("collectstatic", interactive=False, verbosity=0)
            say(bootstrap.ensure_redis(say))
            say(bootstrap.ensure_docker(say))
            if not options["skip_image"]:
                say(bootstrap.ensure_sandbox_image(say))
            if not options["skip_admin"]:
                say(bootstrap.ensure_admin(say))
        except (bootstrap.BootstrapError, SandboxError) as exc:
            raise CommandError(str(exc)) from None
        if options["url"]:
            say(self.style.SUCCESS(f"Ready: open {options['url']}  (Ctrl-C stops everything)"))
