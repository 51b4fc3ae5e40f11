"""A move's progress reaches the server's ``progress`` field."""

from unittest import mock

from nova_xhv.migration import source_side


class RecordingInstance(object):
    uuid = 'c0ffee00-0000-4000-8000-000000000001'

    def __init__(self, fail_save=False):
        self.progress = 0
        self.saved = []
        self._fail_save = fail_save

    def save(self):
        if self._fail_save:
            raise RuntimeError('database went away')
        self.saved.append(self.progress)


def test_each_new_percent_is_saved_once_and_clamped():
    instance = RecordingInstance()
    for percent in (10, 10, 55, 120, -3):
        source_side.report_progress(instance, percent)
    assert instance.saved == [10, 55, 100, 0]


def test_a_failed_save_never_fails_the_move():
    instance = RecordingInstance(fail_save=True)
    with mock.patch.object(source_side.LOG, 'warning') as warning:
        source_side.report_progress(instance, 40)
    assert instance.progress == 40
    assert warning.called
