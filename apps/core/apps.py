from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "sandboxweb core"

    def ready(self) -> None:
        from . import login_throttle

        login_throttle.connect_signals()
