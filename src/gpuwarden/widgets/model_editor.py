"""Add a model to the config file, or edit one, with the pre-flight's verdict shown first.

Pick a GGUF file and the dialog says whether it fits (whole, some layers, not at all) on
the chosen GPU with the chosen context, or refuses a file that is no GGUF model; the
estimate runs off the UI thread (:mod:`.estimate_worker`). Save writes the entry with
:mod:`gpuwarden.engine.config_edit` (the user's comments and layout kept) and says why
when it cannot. The dialog never talks to the engine: the running gpuwarden picks the
change up through its live reload of the config file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from PySide6.QtCore import QThreadPool, Signal, Slot
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from gpuwarden.engine.config_edit import ConfigEditError, add_model, update_model
from gpuwarden.engine.lifecycle.config import ModelConfig, load_config
from gpuwarden.engine.safety.estimate import FitToolLocator, free_vram_of, headline
from gpuwarden.engine.telemetry.snapshot import Snapshot
from gpuwarden.widgets.estimate_worker import EstimateOutcome, EstimateRequest, EstimateWorker
from gpuwarden.widgets.model_form import DEFAULTS, ModelForm
from gpuwarden.widgets.theme import Theme

SnapshotGetter = Callable[[], Snapshot | None]


# What the dialog adds and edits: GGUF models (simulated ones only where the config has
# them already); torch and command entries are edited in the file.
EDITABLE_BACKENDS: tuple[str, ...] = ("llama-server", "llama-cpp", "simulated")


class ModelEditor(QDialog):
    """Add (``model`` None) or edit ``model`` in the config file at ``config_path``.
    ``fit_tool``: where llama.cpp's fit tool is, to price the model as llama.cpp does (as
    ``gpuwarden estimate`` does); None prices it from the GGUF metadata."""

    saved = Signal(str)  # the model's name, once the file is written

    def __init__(self, theme: Theme, config_path: Path, snapshot_getter: SnapshotGetter,
                 parent: QWidget | None = None, *, model: ModelConfig | None = None,
                 fit_tool: FitToolLocator | None = None,
                 pool: QThreadPool | None = None) -> None:
        super().__init__(parent)
        self.theme, self.config_path, self.snapshot_getter = theme, config_path, snapshot_getter
        self.original = model
        self.outcome: EstimateOutcome | None = None  # for the current inputs, once priced
        self._named_after: Path | None = None  # the file the name was last suggested for
        self._suggested = ""
        config, _ = load_config(config_path)
        self.taken = {m.name for m in config.models} - ({model.name} if model else set())
        backends = EDITABLE_BACKENDS[:2]
        if any(m.backend == "simulated" for m in config.models) or (
                model is not None and model.backend == "simulated"):
            backends += ("simulated",)
        snapshot = snapshot_getter()
        self.form = ModelForm(backends, snapshot.gpus if snapshot is not None else (), self)
        self.worker = EstimateWorker(fit_tool, pool, self)
        self.setWindowTitle(f"Edit {model.name}" if model else "Add a model")
        self._build()
        if model is not None:
            self.form.fill(model)
        self.form.changed.connect(self._inputs_changed)
        self.form.browse_button.clicked.connect(self.browse)
        self.worker.finished.connect(self._show_outcome)
        self._inputs_changed()

    @classmethod
    def edit(cls, theme: Theme, config_path: Path, snapshot_getter: SnapshotGetter,
             model: ModelConfig, parent: QWidget | None = None,
             fit_tool: FitToolLocator | None = None) -> ModelEditor:
        return cls(theme, config_path, snapshot_getter, parent, model=model,
                   fit_tool=fit_tool)

    def _build(self) -> None:
        self.verdict = QLabel()
        self.verdict.setObjectName("verdict")
        self.verdict.setWordWrap(True)
        font = self.verdict.font()
        font.setBold(True)
        self.verdict.setFont(font)
        self.detail = QLabel()
        self.detail.setObjectName("verdictDetail")
        self.detail.setWordWrap(True)
        self.problem = QLabel()
        self.problem.setObjectName("problem")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet(f"color: {self.theme.state_bad};")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.save_button = self.buttons.addButton(
            "Save" if self.original else "Add model", QDialogButtonBox.ButtonRole.AcceptRole)
        self.save_button.setDefault(True)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        layout.addSpacing(6)
        layout.addWidget(self.verdict)
        layout.addWidget(self.detail)
        layout.addWidget(self.problem)
        layout.addStretch(1)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance("x") * 80)

    # -- the file and its estimate ------------------------------------------------------------

    @Slot()
    def browse(self) -> None:
        start = self.form.path() or self.config_path.parent
        chosen, _ = QFileDialog.getOpenFileName(
            self, "Choose a GGUF model file", str(start),
            "GGUF models (*.gguf);;All files (*)")
        if chosen:
            self.form.set_path(Path(chosen))

    def choose_file(self, path: Path) -> None:
        """As if ``path`` was picked with Browse…"""
        self.form.set_path(path)

    @Slot()
    def _inputs_changed(self) -> None:
        path = self.form.path()
        if path is not None and path != self._named_after:
            self._named_after = path
            name = self.form.name.text()
            if not name or name == self._suggested:  # not one the user chose
                self._suggested = self._free_name(path.stem)
                self.form.name.setText(self._suggested)
        request = self._request()
        if request is None or self.outcome is None or \
                self.outcome.request.inputs != request.inputs:
            self.outcome = None
        self.worker.request(request)
        self._show_waiting(request)
        self._sync()

    def _free_name(self, stem: str) -> str:
        name, n = stem, 2
        while name in self.taken:
            name, n = f"{stem}-{n}", n + 1
        return name

    def _request(self) -> EstimateRequest | None:
        path = self.form.path()
        if path is None or self.form.backend() == "simulated":
            return None
        snapshot = self.snapshot_getter()
        free = tuple(sorted(free_vram_of(snapshot).items()))
        return EstimateRequest(path, self.form.context.value(), self.form.gpu(),
                               self.form.placement(), free)

    def _show_waiting(self, request: EstimateRequest | None) -> None:
        if self.outcome is not None:
            return
        if self.form.backend() == "simulated":
            self._say("A simulated model: there is no file to price.", "", None)
        elif request is None:
            self._say("Choose a GGUF model file to see whether it fits.", "", None)
        else:
            self._say("Estimating…", "", None)

    @Slot(object)
    def _show_outcome(self, outcome: EstimateOutcome) -> None:
        self.outcome = outcome
        if outcome.refused is not None:
            path = outcome.request.path
            why = outcome.refused.removeprefix(f"{path}: ")
            self._say(f"Refused: {why}", f"{path} cannot be loaded as a model: choose a "
                      "GGUF model file (.gguf).", self.theme.state_bad)
        elif outcome.error is not None or outcome.estimate is None:
            self._say(f"Cannot estimate: {outcome.error}", "", self.theme.state_bad)
        else:
            verdict = outcome.estimate.verdict
            colour = {"fits": self.theme.state_ok, "fits-partially": self.theme.state_busy}
            self._say(headline(verdict), _detail(outcome),
                      colour.get(verdict.kind, self.theme.state_bad))
            self.form.set_layer_count(verdict.total_layers, verdict.gpu_layers)
        self._sync()

    def _say(self, head: str, detail: str, colour: str | None) -> None:
        self.verdict.setText(head)
        self.verdict.setStyleSheet(f"color: {colour};" if colour else "")
        self.detail.setText(detail)
        self.detail.setVisible(bool(detail))

    # -- saving ----------------------------------------------------------------------------------

    def name_problem(self) -> str | None:
        name = self.form.name.text()
        if not name.strip():
            return "Give the model a name."
        if name != name.strip():
            return "A name cannot start or end with a space."
        if name in self.taken:
            return f"A model named {name!r} is already in the config."
        return None

    def file_problem(self) -> str | None:
        if self.form.backend() == "simulated":
            return None
        path = self.form.path()
        if path is None:
            return "Choose the model's GGUF file."
        if not path.is_file():
            return f"No such file: {path}"
        if self.outcome is not None and self.outcome.refused is not None:
            return "This file cannot be used as a model."
        return None

    def _sync(self) -> None:
        problem = self.name_problem() or self.file_problem()
        waiting = self._request() is not None and self.outcome is None
        self.save_button.setEnabled(problem is None and not waiting)
        self.save_button.setToolTip(problem or "")

    @Slot()
    def save(self) -> None:
        """Write the entry; on a refusal say why and stay open."""
        if not self.save_button.isEnabled():
            return
        fields = self.form.fields()
        try:
            if self.original is None:
                add_model(self.config_path, _without_defaults(fields))
            else:
                changed = _changes(self.form.fields_of(self.original), fields)
                if changed:
                    update_model(self.config_path, self.original.name, changed)
        except (ConfigEditError, OSError) as exc:
            self.problem.setText(f"Not saved: {exc}")
            return
        self.saved.emit(str(fields["name"]))
        self.accept()


def _detail(outcome: EstimateOutcome) -> str:
    assert outcome.estimate is not None
    v = outcome.estimate.verdict
    figures = "llama.cpp's projection" if v.source == "llama.cpp" else "the GGUF metadata"
    parts = [v.message, f"The model has {v.total_layers} layers; figures from {figures}."]
    parts += [n.removeprefix("note: ").capitalize() + "." for n in outcome.estimate.notes]
    return " ".join(parts)


def _without_defaults(fields: Mapping[str, object]) -> dict[str, object]:
    """A new entry writes what identifies it and what differs from the defaults."""
    always = ("name", "backend", "path", "context_size", "placement", "gpu")
    return {k: v for k, v in fields.items() if k in always or DEFAULTS.get(k) != v}


def _changes(before: Mapping[str, object], after: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in after.items() if before.get(k) != v}
