"""Re-encrypt every stored secret with the newest key in SECRETS_KEYS (docs/security.md)."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.audit.services import Action, record
from apps.projects import crypto

ACTION = Action.SECRET_ROTATE_KEYS


class Command(BaseCommand):
    help = (
        "Re-encrypt all project secrets with the first key of SECRETS_KEYS. Put the new key "
        "first (keeping the old one), restart, run this, then remove the old key. Safe to repeat."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=200)

    def handle(self, *args, batch_size: int, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        result = crypto.reencrypt_all(batch_size=batch_size)
        fingerprint = crypto.key_fingerprint()
        with transaction.atomic():
            record(
                actor=None,
                action=ACTION,
                target_type="projects.projectsecret",
                target_repr=f"newest key {fingerprint}",
                after={
                    "key": fingerprint,
                    "reencrypted": result.reencrypted,
                    "already_current": result.current,
                    "undecryptable": list(result.failed),
                },
            )
        self.stdout.write(
            f"project secrets: {result.reencrypted} re-encrypted, {result.current} already on "
            f"the newest key (key {fingerprint}), {len(result.failed)} undecryptable, "
            f"in {result.batches} batch(es)."
        )
        if result.failed:
            raise CommandError(
                f"{len(result.failed)} secret(s) cannot be decrypted with any key in SECRETS_KEYS "
                f"(ids {', '.join(map(str, result.failed))}); they were left unchanged. Do not "
                "remove an old key until this reports 0."
            )
