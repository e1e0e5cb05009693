import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandboxweb.settings")
# Django's docs: no persistent database connections under ASGI. Each request runs its sync part
# in a thread of its own, so a kept connection is never reused and lingers until its thread is
# collected: one daphne held 22 PostgreSQL connections for 4 browsing clients in bench/load.py.
# (Celery workers keep theirs: their threads live as long as a run and reuse them.)
settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
# Django must be set up before anything imports models (consumers, routing).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from .routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
