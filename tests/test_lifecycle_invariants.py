"""A hypothesis state machine that drives random loads, accesses, crashes, pressure and
user actions, and checks the manager's promises after every step:

- at most one live process per model, and the backend runs exactly the live models;
- a model the user unloaded is never brought back automatically;
- a scheduled restart is never pushed back or duplicated;
- only live models hold VRAM on the (simulated) GPU.
"""

from contextlib import ExitStack

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gpuwarden.engine.lifecycle.config import RestartConfig
from gpuwarden.engine.lifecycle.simulated_backend import owner
from lifecycle_helpers import model
from lifecycle_rig import Rig

GIB = 1024.0
NAMES = ("a", "b", "c", "d")
names = st.sampled_from(NAMES)


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.rig = Rig(
            model("a", vram_mib=6 * GIB, load_time_s=0.5, idle_timeout_s=60.0),
            model("b", vram_mib=8 * GIB, load_time_s=1.0, eviction="pressure"),
            model("c", vram_mib=10 * GIB, load_time_s=2.0, eviction="never", placement="gpu"),
            model("d", vram_mib=3 * GIB, ram_mib=3 * GIB, load_time_s=0.0, placement="auto",
                  idle_timeout_s=30.0),
            restart=RestartConfig(backoff_base_s=1.0, backoff_cap_s=8.0, max_consecutive=3),
            stop_time_s=0.7,  # stops take a while, as real processes' do
        )
        self.user_unloaded: set[str] = set()
        self.scheduled: dict[str, tuple[float, int]] = {}
        self.guards = ExitStack()

    @rule(name=names)
    def load(self, name: str) -> None:
        if self.rig.manager.load(name).ok:
            self.user_unloaded.discard(name)

    @rule(name=names)
    def unload(self, name: str) -> None:
        assert self.rig.manager.unload(name).ok
        self.user_unloaded.add(name)

    @rule(name=names)
    def restart(self, name: str) -> None:
        assert self.rig.manager.restart(name).ok
        self.user_unloaded.discard(name)

    @rule(name=names)
    def offload(self, name: str) -> None:
        self.rig.manager.offload(name)

    @rule(name=names)
    def access(self, name: str) -> None:
        self.rig.manager.notify_access(name)

    @rule(name=names, code=st.sampled_from([1, 134, 137]))
    def crash(self, name: str, code: int) -> None:
        self.rig.backend.crash(name, exit_code=code)

    @rule()
    def shutdown_and_start_again(self) -> None:
        self.rig.manager.shutdown()
        self.user_unloaded = set(NAMES)

    @rule(name=names)
    def serve(self, name: str) -> None:
        self.guards.enter_context(self.rig.manager.in_use(name))

    @rule()
    def finish_serving(self) -> None:
        self.guards.close()
        self.guards = ExitStack()

    @rule(mib=st.floats(0, 20 * GIB))
    def other_process_grabs(self, mib: float) -> None:
        self.rig.gpu.grab_external("other", mib)

    @rule()
    def other_process_frees(self) -> None:
        self.rig.gpu.free_external("other")

    @precondition(lambda self: True)
    @rule(seconds=st.floats(0.1, 90.0))
    def time_passes(self, seconds: float) -> None:
        self.rig.step(seconds, every=max(1.0, seconds / 6))

    @invariant()
    def one_live_process_per_model(self) -> None:
        states = self.rig.manager.states()
        live = sorted(n for n, s in states.items() if s.live)
        assert self.rig.backend.running() == live


    @invariant()
    def user_unloads_stick(self) -> None:
        for name in self.user_unloaded:
            state = self.rig.manager.state(name)
            assert state.device in ("unloaded", "crashed", "stopping"), \
                f"{name} came back after the user unloaded it ({state.device})"
            assert state.restart_at is None

    @invariant()
    def restarts_never_pushed_back(self) -> None:
        for name, s in self.rig.manager.states().items():
            if s.restart_at is None:
                self.scheduled.pop(name, None)
                continue
            previous = self.scheduled.get(name)
            if previous is not None and previous[1] == s.consecutive_crashes:
                assert s.restart_at <= previous[0], f"{name}'s restart was pushed back"
            self.scheduled[name] = (s.restart_at, s.consecutive_crashes)

    @invariant()
    def only_live_models_hold_vram(self) -> None:
        held = {o for o in self.rig.gpu.allocations() if o.startswith("model:")}
        live = {owner(n) for n, s in self.rig.manager.states().items() if s.live}
        assert held <= live

    def teardown(self) -> None:
        self.guards.close()


LifecycleMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                              deadline=None)
TestLifecycleInvariants = LifecycleMachine.TestCase
