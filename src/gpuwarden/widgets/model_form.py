"""The fields of one ``[[models]]`` entry as a form (name, GGUF file, backend, GPU, context,
placement, priority, eviction, idle timeout, autostart), read and filled as the config's
own values. Used by the Add / Edit model dialog; it knows nothing of files or estimates."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from gpuwarden.engine.lifecycle.config import EVICTION_POLICIES, ModelConfig, Placement
from gpuwarden.engine.safety.gguf_plan import MAX_CONTEXT
from gpuwarden.engine.safety.preflight import GpuChoice
from gpuwarden.engine.telemetry.snapshot import GpuSample, fmt_mib

_OPTIONAL = ("priority", "eviction", "idle_timeout_s", "autostart")
DEFAULTS: Mapping[str, object] = {
    f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name in _OPTIONAL}
PLACEMENTS = (
    ("auto", "auto: on the GPU when it fits, else the CPU"),
    ("gpu", "gpu: every layer on the GPU"),
    ("cpu", "cpu: on the CPU only"),
    ("layers", "some layers on the GPU:"),
)
EVICTIONS: Mapping[str, str] = {
    "idle": "idle: unloaded after the idle timeout, or to relieve pressure",
    "pressure": "pressure: unloaded only to relieve memory pressure",
    "never": "never: pinned, only you unload it",
}
MAX_LAYERS = 100_000


class ModelForm(QWidget):
    changed = Signal()  # any field

    def __init__(self, backends: Sequence[str], gpus: Sequence[GpuSample],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = QLineEdit()
        self.name.setPlaceholderText("shown in the window and the logs")
        self.file = QLineEdit()
        self.file.setPlaceholderText("/path/to/model.gguf")
        self.browse_button = QPushButton("Browse…")
        self.backend_box = _combo([(b, b) for b in backends])
        self.gpu_box = _combo([("auto", "auto: the GPU it fits best"),
                               *((g.index, _gpu_label(g)) for g in gpus)])
        if gpus:
            self.gpu_box.setCurrentIndex(1 if len(gpus) == 1 else 0)
        self.context = _spin(1, MAX_CONTEXT, 4096, " tokens")
        self.context.setSingleStep(1024)
        self.placement_box = _combo(PLACEMENTS)
        self.layers = _spin(0, MAX_LAYERS, 0, " layers")
        self.priority = _spin(-1000, 1000, 0, "")
        self.eviction_box = _combo([(p, EVICTIONS[p]) for p in EVICTION_POLICIES])
        self.idle = QDoubleSpinBox()
        self.idle.setRange(0, 1e7)
        self.idle.setDecimals(0)
        self.idle.setSuffix(" s")
        self.idle.setValue(ModelConfig.idle_timeout_s)
        self.autostart = QCheckBox("Load it when gpuwarden starts")
        self._lay_out()
        self._connect()
        self._sync_enabled()

    def _lay_out(self) -> None:
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Name", self.name)
        form.addRow("GGUF file", _row(self.file, self.browse_button))
        form.addRow("Backend", self.backend_box)
        form.addRow("GPU", self.gpu_box)
        form.addRow("Context size", self.context)
        form.addRow("Placement", _row(self.placement_box, self.layers))
        form.addRow("Priority", self.priority)
        form.addRow("Eviction", self.eviction_box)
        form.addRow("Idle timeout", self.idle)
        form.addRow("", self.autostart)

    def _connect(self) -> None:
        for signal in (self.name.textChanged, self.file.textChanged,
                       self.backend_box.currentIndexChanged, self.gpu_box.currentIndexChanged,
                       self.context.valueChanged, self.placement_box.currentIndexChanged,
                       self.layers.valueChanged, self.priority.valueChanged,
                       self.eviction_box.currentIndexChanged, self.idle.valueChanged,
                       self.autostart.toggled):
            signal.connect(self._on_change)

    @Slot()
    def _on_change(self) -> None:
        self._sync_enabled()
        self.changed.emit()

    def _sync_enabled(self) -> None:
        self.layers.setEnabled(self.placement_box.currentData() == "layers")
        self.idle.setEnabled(self.eviction_box.currentData() == "idle")

    # -- reading -----------------------------------------------------------------------------

    def path(self) -> Path | None:
        text = self.file.text().strip()
        return Path(text).expanduser() if text else None

    def backend(self) -> str:
        return str(self.backend_box.currentData())

    def gpu(self) -> GpuChoice:
        data = self.gpu_box.currentData()
        return data if isinstance(data, int) else "auto"

    def placement(self) -> Placement:
        mode = self.placement_box.currentData()
        if mode == "layers":
            return self.layers.value()
        return "gpu" if mode == "gpu" else "cpu" if mode == "cpu" else "auto"

    def fields(self) -> dict[str, object]:
        """The entry as the config writes it."""
        path = self.path()
        return {
            "name": self.name.text(), "backend": self.backend(),
            "path": str(path) if path is not None else None,
            "context_size": self.context.value(), "placement": self.placement(),
            "gpu": self.gpu(), "priority": self.priority.value(),
            "eviction": self.eviction_box.currentData(),
            "idle_timeout_s": self.idle.value(), "autostart": self.autostart.isChecked(),
        }

    @staticmethod
    def fields_of(model: ModelConfig) -> dict[str, object]:
        """``model`` as :meth:`fields` reads the form."""
        return {
            "name": model.name, "backend": model.backend,
            "path": str(model.path) if model.path is not None else None,
            "context_size": model.context_size, "placement": model.placement,
            "gpu": "auto" if model.gpu_auto else model.gpu, "priority": model.priority,
            "eviction": model.eviction, "idle_timeout_s": model.idle_timeout_s,
            "autostart": model.autostart,
        }

    # -- filling -----------------------------------------------------------------------------

    def set_path(self, path: Path) -> None:
        self.file.setText(str(path))

    def set_layer_count(self, layers: int, fitting: int) -> None:
        """The model's layer count, once known: the most a partial placement can take;
        until the user picks a number, the layers that fit."""
        if layers > 0:
            self.layers.setMaximum(layers)
        if not self.layers.isEnabled():
            self.layers.setValue(fitting)

    def fill(self, model: ModelConfig) -> None:
        self.name.setText(model.name)
        if model.path is not None:
            self.set_path(model.path)
        _select(self.backend_box, model.backend)
        gpu: GpuChoice = "auto" if model.gpu_auto else model.gpu
        if self.gpu_box.findData(gpu) < 0:
            self.gpu_box.addItem(f"GPU {gpu} (not on this machine now)", gpu)
        _select(self.gpu_box, gpu)
        self.context.setValue(model.context_size)
        if isinstance(model.placement, int):
            _select(self.placement_box, "layers")
            self.layers.setValue(model.placement)
        else:
            _select(self.placement_box, model.placement)
        self.priority.setValue(model.priority)
        _select(self.eviction_box, model.eviction)
        self.idle.setValue(model.idle_timeout_s)
        self.autostart.setChecked(model.autostart)


def _gpu_label(gpu: GpuSample) -> str:
    if not gpu.available:
        return f"GPU {gpu.index}: {gpu.name} (not answering)"
    return f"GPU {gpu.index}: {gpu.name} ({fmt_mib(gpu.memory_free_mib)} free now)"


def _combo(items: Sequence[tuple[object, str]]) -> QComboBox:
    box = QComboBox()
    for data, text in items:
        box.addItem(text, data)
    return box


def _select(box: QComboBox, data: object) -> None:
    index = box.findData(data)
    if index >= 0:
        box.setCurrentIndex(index)


def _spin(low: int, high: int, value: int, suffix: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setSuffix(suffix)
    return spin


def _row(*widgets: QWidget) -> QWidget:
    holder = QWidget()
    row = QHBoxLayout(holder)
    row.setContentsMargins(0, 0, 0, 0)
    for i, widget in enumerate(widgets):
        row.addWidget(widget, 1 if i == 0 else 0)
    return holder
