import io

from nova_xhv.cmd import convert


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
