"""The banner shown when no NVIDIA GPU or driver is found: it says so and offers the
simulated GPU."""

from __future__ import annotations

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton

from gpuwarden.widgets.theme import Theme


class NoGpuBanner(QFrame):
    """Says plainly that no NVIDIA GPU/driver was found and offers the simulated GPU."""

    def __init__(self, theme: Theme) -> None:
        super().__init__()
        self.setObjectName("noGpuBanner")
        self.setStyleSheet(
            f"#noGpuBanner {{ background: {theme.banner_bg}; border-radius: 6px; }}"
            f"#noGpuBanner QLabel {{ color: {theme.banner_fg}; }}"
        )
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.simulate_button = QPushButton("Use a simulated GPU")
        layout = QHBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.simulate_button)
