"""The notifier's hints (``medfed.hub.dispatch.Notifier``): a noted read stands in for the
next one until a wake-up of its key, a listener outage, or its age says otherwise."""

from __future__ import annotations

import time

from medfed.hub.dispatch import Notifier


def test_a_noted_empty_read_holds_until_a_wake_up_of_its_key() -> None:
    notifier = Notifier()
    assert notifier.known("node:1", 60) is None  # nothing noted: read
    stamp = notifier.stamp("node:1")
    notifier.note("node:1", stamp, work=False)
    assert notifier.known("node:1", 60) is False
    notifier.wake(["node:2", "task:1"])  # other keys leave it
    assert notifier.known("node:1", 60) is False
    notifier.wake(["node:1"])
    assert notifier.known("node:1", 60) is None


def test_a_wake_up_between_the_stamp_and_the_note_voids_the_note() -> None:
    notifier = Notifier()
    stamp = notifier.stamp("node:1")
    notifier.wake(["node:1"])  # a commit the read may have missed
    notifier.note("node:1", stamp, work=False)
    assert notifier.known("node:1", 60) is None


def test_waking_every_waiter_voids_every_note() -> None:
    notifier = Notifier()
    for key in ("node:1", "node:2"):
        notifier.note(key, notifier.stamp(key), work=False)
    notifier.wake_all()  # a listener came back: whatever it missed
    assert notifier.known("node:1", 60) is None
    assert notifier.known("node:2", 60) is None


def test_a_note_ends_with_its_age_and_work_outlives_wake_ups() -> None:
    notifier = Notifier()
    notifier.note("node:1", notifier.stamp("node:1"), work=True)
    notifier.wake(["node:1"])  # more work: still work
    assert notifier.known("node:1", 60) is True
    notifier.note("node:2", notifier.stamp("node:2"), work=False)
    time.sleep(0.02)
    assert notifier.known("node:2", 0.01) is None
    assert notifier.known("node:2", 60) is None  # an expired note is gone


def test_a_read_inside_the_waking_transaction_notes_as_of_its_own_wake_up() -> None:
    notifier = Notifier()
    stamp = notifier.stamp("node:1")  # taken before the transaction's read
    notifier.wake(["node:1"])  # the transaction's own commit
    notifier.note_after_own_wake("node:1", stamp, work=False)
    assert notifier.known("node:1", 60) is False
    notifier.wake(["node:1"])  # a later commit voids it, as any note
    assert notifier.known("node:1", 60) is None


def test_another_wake_up_before_the_own_one_leaves_nothing_noted() -> None:
    notifier = Notifier()
    stamp = notifier.stamp("node:1")
    notifier.wake(["node:1"])  # another commit the read may have missed
    notifier.wake(["node:1"])  # the transaction's own
    notifier.note_after_own_wake("node:1", stamp, work=False)
    assert notifier.known("node:1", 60) is None
    stamp = notifier.stamp("node:2")
    notifier.wake_all()  # an outage between the read and the note
    notifier.wake(["node:2"])
    notifier.note_after_own_wake("node:2", stamp, work=False)
    assert notifier.known("node:2", 60) is None
