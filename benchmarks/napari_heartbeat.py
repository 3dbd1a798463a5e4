"""Longest interface freeze (a 50 ms QTimer heartbeat) during a 30-epoch Autoencoder run from the
panel on the pbmc68k sample, with 1 torch thread."""
import time
import numpy as np, torch, napari
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication
torch.set_num_threads(1)
from scnapse.napari import AutoencoderWidget, sample_pbmc68k

viewer = napari.Viewer(show=True)
data, kw, _ = sample_pbmc68k()[0]
viewer.add_points(data, **kw)
panel = AutoencoderWidget(viewer)
viewer.window.add_dock_widget(panel)
panel.train_options.set_values(max_epochs=30, early_stopping=0)
app = QApplication.instance()
for _ in range(10): app.processEvents()
beats, reports = [], []
panel._relay.report.connect(lambda r: reports.append(time.perf_counter()))
timer = QTimer(); timer.setInterval(50); timer.timeout.connect(lambda: beats.append(time.perf_counter())); timer.start()
panel.run()
while panel.running:
    app.processEvents(); time.sleep(0.002)
for _ in range(30):
    app.processEvents(); time.sleep(0.01)
timer.stop()
b = np.array(beats); gaps = np.diff(b)
during = np.diff(b[(b >= reports[0]) & (b <= reports[-1])])
print(f"epochs {len(reports)}, training {reports[-1]-reports[0]:.1f} s; longest gap {gaps.max()*1000:.0f} ms "
      f"(while training {during.max()*1000:.0f} ms, median {np.median(during)*1000:.0f} ms); "
      f"gaps > 200 ms: {(gaps > 0.2).sum()}; full plot draws {panel.loss_plot.full_draws}")
print(panel.status.text())
