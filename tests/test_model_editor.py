"""The Add / Edit model dialog: the pre-flight's verdict for a real (tiny) GGUF file, a clear
refusal for a file that is no model, Save only when the entry can be written, and a
written config that keeps the user's comments and loads with the values chosen."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QCoreApplication, QThreadPool

from gguf_factory import write_tiny_llama
from gpuwarden.engine.lifecycle.config import ModelConfig, load_config
from gpuwarden.engine.safety.estimate import make_plan
from gpuwarden.engine.safety.overhead import DEFAULT_OVERHEAD_MIB
from gpuwarden.engine.safety.preflight import DEFAULT_MARGIN_MIB
from gpuwarden.engine.telemetry.snapshot import GpuSample, HostSample, Snapshot
from gpuwarden.widgets.estimate_worker import EstimateRequest, EstimateWorker
from gpuwarden.widgets.model_editor import ModelEditor
from gpuwarden.widgets.theme import DARK, LIGHT, Theme

pytestmark = pytest.mark.qt

CONFIG = """\
# my models: keep chat pinned
sample_interval_s = 1  # every second

[[models]]
name = "chat"  # the one I use
backend = "simulated"
vram_mib = 6200

# limits
[pressure]
vram_enter_pct = 92  # higher than the default
"""
DEADLINE_MS = 10_000


def snapshot(*free_mib: float) -> Snapshot:
    gpus = tuple(GpuSample(i, f"Test GPU {i}", f"GPU-{i}", memory_total_mib=24_576.0,
                           memory_used_mib=24_576.0 - free, memory_free_mib=free)
                 for i, free in enumerate(free_mib))
    return Snapshot(0.0, 1, "nvml", gpus, HostSample())


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_tiny_llama(tmp_path / "tiny-chat-Q8.gguf", n_layers=4, n_embd=256, n_ff=512)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def pool() -> Iterator[QThreadPool]:
    """The dialogs' own pool, so no estimate is still running when a test ends."""
    pool = QThreadPool()
    yield pool
    assert pool.waitForDone(DEADLINE_MS)


@pytest.fixture
def open_editor(qtbot, config: Path, pool: QThreadPool):
    def _open(free: tuple[float, ...] = (22_000.0,), theme: Theme = DARK,
              model: ModelConfig | None = None) -> ModelEditor:
        editor = ModelEditor(theme, config, lambda: snapshot(*free), model=model, pool=pool)
        qtbot.addWidget(editor)
        editor.show()
        return editor

    return _open


def verdict_of(qtbot, editor: ModelEditor) -> str:
    qtbot.waitUntil(lambda: editor.outcome is not None, timeout=DEADLINE_MS)
    return editor.verdict.text()


def test_a_gguf_that_fits_shows_the_verdict_and_can_be_added(qtbot, open_editor,
                                                             model: Path) -> None:
    editor = open_editor()
    assert not editor.save_button.isEnabled()  # no file yet
    assert "Choose a GGUF model file" in editor.verdict.text()
    editor.choose_file(model)
    assert editor.form.name.text() == "tiny-chat-Q8"  # from the file name
    text = verdict_of(qtbot, editor)
    assert text.startswith("Fits on GPU 0 (") and text.endswith("of 21.5 GiB free)")
    assert "4 layers" in editor.detail.text()
    assert editor.save_button.isEnabled()


def test_typing_a_name_does_not_estimate_again(qtbot, config: Path, model: Path,
                                              pool: QThreadPool) -> None:
    """The free VRAM moves on every sample; only the file, context, GPU or placement ask
    for a new estimate."""
    reads: list[float] = []

    def moving_snapshot() -> Snapshot:
        reads.append(20_000.0 + len(reads))
        return snapshot(reads[-1])

    editor = ModelEditor(DARK, config, moving_snapshot, pool=pool)
    qtbot.addWidget(editor)
    editor.choose_file(model)
    first = verdict_of(qtbot, editor)
    outcome = editor.outcome
    editor.form.name.setText("another name")
    assert editor.outcome is outcome
    assert editor.verdict.text() == first
    editor.form.context.setValue(2048)
    assert editor.outcome is None and editor.verdict.text() == "Estimating…"
    qtbot.waitUntil(lambda: editor.outcome is not None, timeout=DEADLINE_MS)
    assert editor.outcome.request.context_size == 2048


def test_a_gpu_with_little_room_takes_some_layers(qtbot, open_editor, model: Path) -> None:
    plan = make_plan(model, 4096)
    room = DEFAULT_OVERHEAD_MIB + DEFAULT_MARGIN_MIB + plan.gpu_mib(2) + 0.5
    editor = open_editor(free=(room,))
    editor.choose_file(model)
    assert verdict_of(qtbot, editor) == \
        "Fits 2 of 4 layers on GPU 0; the rest runs on the CPU"
    assert editor.form.layers.value() == 2  # what fits, offered for a partial placement
    # The same file on the CPU needs no GPU memory at all.
    editor.form.placement_box.setCurrentIndex(editor.form.placement_box.findData("cpu"))
    qtbot.waitUntil(lambda: editor.outcome is not None
                    and editor.outcome.request.requested == "cpu", timeout=DEADLINE_MS)
    assert "no GPU memory" in editor.verdict.text()


def test_a_full_gpu_does_not_fit_and_a_missing_gpu_is_said(qtbot, open_editor,
                                                           model: Path) -> None:
    editor = open_editor(free=(300.0, 22_000.0))
    editor.choose_file(model)
    editor.form.gpu_box.setCurrentIndex(editor.form.gpu_box.findData(0))
    qtbot.waitUntil(lambda: editor.outcome is not None
                    and editor.outcome.request.gpu == 0, timeout=DEADLINE_MS)
    assert editor.verdict.text().startswith("Does not fit on GPU 0: needs ")
    assert editor.save_button.isEnabled()  # the memory may be free by the time it loads
    editor.form.gpu_box.setCurrentIndex(editor.form.gpu_box.findData("auto"))
    qtbot.waitUntil(lambda: editor.outcome is not None
                    and editor.outcome.request.gpu == "auto", timeout=DEADLINE_MS)
    assert editor.verdict.text().startswith("Fits on GPU 1 (")


def test_a_text_file_is_refused_and_save_stays_disabled(qtbot, open_editor, model: Path,
                                                        tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    editor = open_editor(theme=LIGHT)
    editor.form.name.setText("notes")
    editor.choose_file(text)
    assert verdict_of(qtbot, editor).startswith("Refused: not a GGUF model file")
    assert str(text) in editor.detail.text()
    assert not editor.save_button.isEnabled()
    editor.save()  # Enter on a disabled button: nothing is written
    assert (tmp_path / "config.toml").read_text() == CONFIG
    editor.choose_file(model)  # a real model: the refusal goes, Save comes back
    assert verdict_of(qtbot, editor).startswith("Fits on GPU 0")
    assert editor.save_button.isEnabled()


def test_save_writes_the_entry_and_keeps_the_comments(qtbot, open_editor, model: Path,
                                                      config: Path) -> None:
    editor = open_editor(free=(22_000.0, 22_000.0))
    editor.choose_file(model)
    form = editor.form
    form.name.setText("tiny")
    form.context.setValue(8192)
    form.gpu_box.setCurrentIndex(form.gpu_box.findData("auto"))
    form.placement_box.setCurrentIndex(form.placement_box.findData("layers"))
    form.layers.setValue(3)
    form.priority.setValue(5)
    form.eviction_box.setCurrentIndex(form.eviction_box.findData("never"))
    form.autostart.setChecked(True)
    qtbot.waitUntil(lambda: editor.save_button.isEnabled(), timeout=DEADLINE_MS)
    with qtbot.waitSignal(editor.saved, timeout=DEADLINE_MS) as saved:
        editor.save_button.click()
    assert saved.args == ["tiny"]
    text = config.read_text()
    assert text.startswith(CONFIG.split("# limits")[0])  # the user's lines, as they were
    for line in ("# limits", "vram_enter_pct = 92  # higher than the default"):
        assert line in text.splitlines()
    assert "idle_timeout_s" not in text  # a default is not written out
    loaded, problems = load_config(config)
    assert problems == []
    tiny = loaded.model("tiny")
    assert tiny is not None
    assert (tiny.backend, tiny.path, tiny.context_size, tiny.gpu_auto, tiny.placement,
            tiny.priority, tiny.eviction, tiny.autostart) == \
        ("llama-server", model, 8192, True, 3, 5, "never", True)
    assert loaded.model("chat") is not None and loaded.pressure.vram.enter == 92


def test_a_name_already_used_is_refused_before_save(qtbot, open_editor, model: Path) -> None:
    editor = open_editor()
    editor.choose_file(model)
    verdict_of(qtbot, editor)
    for bad in ("chat", "", " padded"):
        editor.form.name.setText(bad)
        assert not editor.save_button.isEnabled(), bad
        assert editor.save_button.toolTip()
    editor.form.name.setText("chat-2")
    assert editor.save_button.isEnabled()


def test_a_refused_write_is_shown_in_the_dialog(qtbot, open_editor, model: Path,
                                                config: Path) -> None:
    editor = open_editor()
    editor.choose_file(model)
    qtbot.waitUntil(lambda: editor.save_button.isEnabled(), timeout=DEADLINE_MS)
    broken = CONFIG + "this is = not = toml\n"
    config.write_text(broken)  # the user broke the file while the dialog was open
    editor.save_button.click()
    assert editor.problem.text().startswith("Not saved: ")
    assert "not valid TOML" in editor.problem.text()
    assert editor.isVisible()
    assert config.read_text() == broken


def test_edit_changes_only_what_was_changed(qtbot, open_editor, model: Path,
                                            config: Path) -> None:
    entry = (f'[[models]]\nname = "tiny"  # mine\nbackend = "llama-server"\n'
             f'path = "{model.name}"  # beside the config\ncontext_size = 2048\n\n')
    config.write_text(CONFIG.replace("# limits", entry + "# limits"))
    tiny = load_config(config)[0].model("tiny")
    assert tiny is not None
    editor = open_editor(model=tiny)
    assert editor.windowTitle() == "Edit tiny"
    assert editor.save_button.text() == "Save"
    assert editor.form.context.value() == 2048
    assert verdict_of(qtbot, editor).startswith("Fits on GPU 0")
    editor.form.priority.setValue(-3)
    with qtbot.waitSignal(editor.saved, timeout=DEADLINE_MS):
        editor.save_button.click()
    lines = config.read_text().splitlines()
    assert 'path = "tiny-chat-Q8.gguf"  # beside the config' in lines  # not rewritten
    assert 'name = "tiny"  # mine' in lines
    assert lines[lines.index("context_size = 2048") + 1] == "priority = -3"
    edited = load_config(config)[0].model("tiny")
    assert edited is not None and edited.priority == -3


def test_estimates_run_off_the_ui_thread_and_stale_answers_are_dropped(
    qtbot, model: Path, pool: QThreadPool
) -> None:
    """The first estimate is held in its thread until a newer one has answered: the older
    answer, arriving last, is dropped."""
    entered, release = threading.Event(), threading.Event()
    threads: list[int] = []

    def fit_tool() -> None:  # called on the estimating thread
        threads.append(threading.get_ident())
        if len(threads) == 1:
            entered.set()
            release.wait(DEADLINE_MS / 1000)

    worker = EstimateWorker(fit_tool, pool)
    answers: list[int] = []
    worker.finished.connect(lambda outcome: answers.append(outcome.request.context_size))
    first = EstimateRequest(model, 1024, "auto", "auto", ((0, 22_000.0),))
    worker.request(first)
    qtbot.waitUntil(entered.is_set, timeout=DEADLINE_MS)
    worker.request(EstimateRequest(model, 2048, "auto", "auto", ((0, 22_000.0),)))
    qtbot.waitUntil(lambda: answers == [2048], timeout=DEADLINE_MS)
    release.set()
    assert pool.waitForDone(DEADLINE_MS)
    QCoreApplication.processEvents()  # delivers the held answer's queued signal, if any
    assert len(threads) == 2
    assert answers == [2048]
    assert threading.get_ident() not in threads
