import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandboxweb.settings")

app = Celery("sandboxweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def visibility_options(seconds: int) -> dict:
    """Redis transport options for a visibility timeout other than the settings' 6 h.

    Redis hands an unacknowledged message to another worker once it is older than the timeout,
    *while the first worker may still run it*; the run's claim (a live lease) makes that
    harmless. Two traps handled here: all workers of a Redis database share one "unacked" index,
    so the shortest timeout among them would redeliver everyone's tasks (each timeout gets an
    index of its own); and kombu scans the index only every 10 x 10 s, which would make a short
    timeout meaningless (scan every few seconds instead).
    """
    return {
        "visibility_timeout": seconds,
        "unacked_key": f"unacked-v{seconds}",
        "unacked_index_key": f"unacked_index-v{seconds}",
        "unacked_mutex_key": f"unacked_mutex-v{seconds}",
        "unacked_restore_interval": max(1, min(10, seconds // 3)),
        "unacked_restore_throttle": 1,
    }


@app.on_after_configure.connect
def visibility_timeout_from_environment(sender: Celery, **kwargs) -> None:
    """``CELERY_VISIBILITY_TIMEOUT_SECONDS`` overrides the settings' value for this process (it
    must stay above the longest run in production; the reliability tests shorten it on purpose
    to prove a redelivered run exits)."""
    seconds = os.environ.get("CELERY_VISIBILITY_TIMEOUT_SECONDS")
    if not seconds:
        return
    seconds = int(seconds)
    sender.conf.broker_transport_options = {
        **(sender.conf.broker_transport_options or {}),
        **visibility_options(seconds),
    }
    sender.conf.result_backend_transport_options = {
        **(sender.conf.result_backend_transport_options or {}),
        "visibility_timeout": seconds,
    }
