import io
import logging

import pytest

from nova_xhv.cmd import convert


@pytest.fixture(autouse=True)
def root_logger_restored():
    # main() sets up the process's logging (root at CRITICAL unless
    # --debug): later tests in this process must not inherit it.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


def test_progress_bar_draws_on_change_only():
    stream = io.StringIO()
    bar = convert.ProgressBar(stream, width=10)
    for value in (0.0, 0.0, 50.0, 50.0, 100.0):
        bar(value)
    bar.finish()
    frames = stream.getvalue().split('\r')[1:]
    assert frames == ['[..........]   0.0%', '[#####.....]  50.0%',
                      '[##########] 100.0%\n']


def test_progress_bar_silent_when_unused():
    stream = io.StringIO()
    convert.ProgressBar(stream).finish()
    assert stream.getvalue() == ''


def test_usage_error_returns_2(capsys):
    assert convert.main(['a', 'b']) == 2
    assert convert.main(['a', 'b', '--to', 'qcow2', '--coroutines',
                         '99']) == 2
    assert 'between 1 and 16' in capsys.readouterr().err
