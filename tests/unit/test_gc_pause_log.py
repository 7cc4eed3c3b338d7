"""The validator logs cycle collections long enough to show at p99 (node/main.py _GcPauseLog)."""
import gc
import logging

from raft_ledger_node import main


def test_a_long_collection_is_logged_with_its_generation_and_a_short_one_is_not(caplog, monkeypatch):
    clock = iter([10.0, 10.0 + main.GC_PAUSE_LOG_S / 2, 20.0, 20.0 + main.GC_PAUSE_LOG_S * 3])
    monkeypatch.setattr(main.time, "perf_counter", lambda: next(clock))
    hook = main._GcPauseLog()
    caplog.set_level(logging.WARNING, logger="ledger.main")
    hook("start", {"generation": 0})
    hook("stop", {"generation": 0, "collected": 0})
    hook("start", {"generation": 2})
    hook("stop", {"generation": 2, "collected": 7})
    lines = [r.getMessage() for r in caplog.records if "garbage collection" in r.getMessage()]
    assert lines == [f"garbage collection of generation 2 held every thread for {main.GC_PAUSE_LOG_S * 3000:.0f} ms "
                     f"(7 objects collected; {gc.get_freeze_count()} frozen at start-up, not scanned)"]


def test_the_hook_is_installed_once_by_the_gc_tuning(monkeypatch):
    monkeypatch.setattr(gc, "callbacks", [])
    main._tune_gc(0)
    main._tune_gc(0)  # a second validator in the same process (tests)
    assert sum(isinstance(cb, main._GcPauseLog) for cb in gc.callbacks) == 1
