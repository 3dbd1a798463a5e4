"""What the screenshot scripts share: letting Qt draw for a while."""

import time

from qtpy.QtWidgets import QApplication


def pump(seconds: float = 1.0) -> None:
    """Process Qt events for ``seconds`` (layers and plots draw, workers report)."""
    app = QApplication.instance()
    t0 = time.time()
    while time.time() - t0 < seconds:
        app.processEvents()
        time.sleep(0.02)
