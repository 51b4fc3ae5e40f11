"""Fixtures for the translation tests: real qemu-img, recorded launches."""

import pytest

from nova_xhv.translate import qemu_img


class LaunchRecorder(object):
    """Wraps the engine's two process seams and records every argv."""

    def __init__(self):
        self.calls = []
        self.pids = []

    def mentions(self, path):
        return [argv for argv in self.calls
                if any(path in str(arg) for arg in argv)]


@pytest.fixture
def launches(monkeypatch):
    recorder = LaunchRecorder()
    real_execute = qemu_img._execute
    real_popen = qemu_img._popen

    def execute(*cmd, **kwargs):
        recorder.calls.append(list(cmd))
        return real_execute(*cmd, **kwargs)

    def popen(argv, **kwargs):
        recorder.calls.append(list(argv))
        proc = real_popen(argv, **kwargs)
        recorder.pids.append(proc.pid)
        return proc

    monkeypatch.setattr(qemu_img, '_execute', execute)
    monkeypatch.setattr(qemu_img, '_popen', popen)
    return recorder
