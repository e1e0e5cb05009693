"""Worker lifecycle hooks: sweep once at start (beat repeats it), release sandboxes at exit."""

from __future__ import annotations

import logging

from celery.signals import worker_init, worker_process_shutdown, worker_ready

log = logging.getLogger(__name__)


@worker_init.connect
def load_the_channel_layer(sender=None, **kwargs) -> None:
    from .channels import warm_up

    warm_up()  # in the parent, before the pool forks: every child starts with it loaded


@worker_ready.connect
def sweep_when_a_worker_starts(sender=None, **kwargs) -> None:
    from .tasks import sweep_task

    try:
        sweep_task.delay()
    except Exception as exc:  # the broker is down: beat will sweep later
        log.warning("could not enqueue the start-up sweep: %s", exc)


@worker_process_shutdown.connect
def close_sandbox_manager(**kwargs) -> None:
    from .execution import close_manager

    close_manager()
