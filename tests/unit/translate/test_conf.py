from oslo_config import cfg
from oslo_config import fixture as config_fixture
import pytest

from nova_xhv.conf import translate as translate_conf
from nova_xhv.conf import xhv


@pytest.fixture
def conf():
    fixture = config_fixture.Config(cfg.ConfigOpts())
    fixture.setUp()
    for group, opts in translate_conf.list_opts() + xhv.list_opts():
        fixture.conf.register_opts(opts, group=group)
    yield fixture
    fixture.cleanUp()


def test_list_opts_uses_the_xhv_group():
    (group, opts), = translate_conf.list_opts()
    assert group is xhv.xhv_group
    assert all(opt.help for opt in opts)


def test_defaults(conf):
    options = translate_conf.convert_options_from_conf(conf.conf.xhv)
    assert options.max_virtual_size == 2048 * 1024 ** 3
    assert options.sparse_size == 4096
    assert options.coroutines == 8
    assert not options.verify and not options.out_of_order
    assert options.scratch_dir is None and options.staging_dir is None
    assert options.vmdk_stream_decoder and options.direct_io


def test_overrides(conf):
    conf.config(group='xhv', max_virtual_size_gib=10,
                qemu_img_cpu_seconds=7, qemu_img_address_space_mib=2048,
                convert_timeout_base=5, convert_timeout_per_gib=2,
                convert_coroutines=3, convert_out_of_order=True,
                convert_rate_limit=1000, convert_sparse_size_kib=0,
                verify_conversions=True, conversion_scratch_dir='/srv/x',
                vmdk_stream_decoder=False, convert_direct_io=False)
    options = translate_conf.convert_options_from_conf(conf.conf.xhv)
    assert (options.max_virtual_size, options.cpu_seconds,
            options.address_space, options.timeout_base,
            options.timeout_per_gib, options.coroutines,
            options.out_of_order, options.rate_limit, options.sparse_size,
            options.verify, options.scratch_dir) == (
        10 * 1024 ** 3, 7, 2048 * 1024 ** 2, 5, 2, 3, True, 1000, 0, True,
        '/srv/x')
    assert options.timeout_for(3 * 1024 ** 3) == 11
    assert not options.vmdk_stream_decoder and not options.direct_io


def test_coroutines_bounded(conf):
    with pytest.raises(ValueError):
        conf.config(group='xhv', convert_coroutines=17)
