"""Free VRAM…: make room on a GPU for another program (a game, ComfyUI). The engine
moves models in its own relief order (to the CPU where the backend can, else unloads
them); pinned models and models serving a request stay. The dialog only asks and says
the choice with ``chosen(gpu, gib | None)``."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from gpuwarden.engine.telemetry.snapshot import GpuSample, fmt_mib
from gpuwarden.engine.views import ModelRow


def on_gpu(rows: Sequence[ModelRow], gpu: int) -> list[ModelRow]:
    """The models holding memory on ``gpu`` now."""
    return [r for r in rows if r.gpu == gpu and r.gpu_layers is not None]


def movable(rows: Sequence[ModelRow], gpu: int) -> list[ModelRow]:
    """The models on ``gpu`` that Free VRAM may move (not pinned, not serving)."""
    return [r for r in on_gpu(rows, gpu) if r.eviction != "never" and not r.serving]


def holdings_text(rows: Sequence[ModelRow], gpu: int) -> str:
    """What each model on ``gpu`` holds and whether it may be moved."""
    held = on_gpu(rows, gpu)
    if not held:
        return f"No model of gpuwarden's is on GPU {gpu}."
    lines = []
    for r in sorted(held, key=lambda r: -(r.vram_mib or r.vram_est_mib)):
        stays = " — stays (pinned)" if r.eviction == "never" else \
            " — stays (serving a request)" if r.serving else ""
        lines.append(f"{r.name}: {fmt_mib(r.vram_mib or r.vram_est_mib)}{stays}")
    return "\n".join(lines)


class FreeVramDialog(QDialog):
    chosen = Signal(int, object)  # (gpu, GiB to free or None for all that may move)

    def __init__(self, gpus: Sequence[GpuSample], rows: Sequence[ModelRow],
                 gpu: int = 0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Free VRAM")
        self._rows = tuple(rows)
        self.gpu_choice = QComboBox()
        for g in gpus:
            free = "" if g.memory_free_mib is None else f" · {fmt_mib(g.memory_free_mib)} free"
            self.gpu_choice.addItem(f"GPU {g.index} · {g.name}{free}", g.index)
        self.gpu_choice.setCurrentIndex(max(0, self.gpu_choice.findData(gpu)))
        self.everything = QRadioButton("Everything that can move")
        self.amount_choice = QRadioButton("At least")
        self.amount = QDoubleSpinBox()
        self.amount.setRange(0.5, 1024.0)
        self.amount.setSingleStep(0.5)
        self.amount.setValue(4.0)
        self.amount.setSuffix(" GiB")
        self.everything.setChecked(True)
        self.amount.setEnabled(False)
        self.amount_choice.toggled.connect(self.amount.setEnabled)
        self.holdings = QLabel()
        self.holdings.setObjectName("freeVramHoldings")
        self.holdings.setWordWrap(True)
        self.gpu_choice.currentIndexChanged.connect(self._show_holdings)
        form = QFormLayout()
        form.addRow("GPU", self.gpu_choice)
        form.addRow("Free", self.everything)
        form.addRow(self.amount_choice, self.amount)
        intro = QLabel("Models move to the CPU where their backend can, else unload, "
                       "least needed first (the order VRAM pressure uses). Pinned models "
                       "and models serving a request stay.")
        intro.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.free_button = buttons.addButton("Free VRAM", QDialogButtonBox.ButtonRole.AcceptRole)
        self.free_button.clicked.connect(self._choose)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.holdings)
        layout.addWidget(buttons)
        self.setMinimumWidth(420)
        self._show_holdings()

    @property
    def gpu(self) -> int:
        return int(self.gpu_choice.currentData() or 0)

    @Slot()
    def _show_holdings(self) -> None:
        self.holdings.setText(holdings_text(self._rows, self.gpu))
        can = bool(movable(self._rows, self.gpu))
        self.free_button.setEnabled(can)
        self.free_button.setToolTip("" if can else "Every model on this GPU stays: pinned or "
                                                   "serving a request (or there is none)")

    @Slot()
    def _choose(self) -> None:
        gib = self.amount.value() if self.amount_choice.isChecked() else None
        self.chosen.emit(self.gpu, gib)
        self.accept()
