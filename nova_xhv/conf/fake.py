"""The ``[xhv_fake]`` group: XHV's fake backend ([xhv] backend = fake)."""

from oslo_config import cfg

xhv_fake_group = cfg.OptGroup(
    'xhv_fake', title='XHV fake backend',
    help='Options of XHV\'s fake backend ([xhv] backend = fake): a '
         'hypervisor family whose guests are records in a state file and '
         'whose disks are vhdx files in a folder. For tests and '
         'demonstrations; it runs no guest.')

fake_opts = [
    cfg.StrOpt('disk_dir',
               default='$state_path/xhv-fake',
               help='Folder holding the fake hypervisor\'s disks and its '
                    'state file, one subfolder per compute host.'),
]


def list_opts():
    return [(xhv_fake_group, fake_opts)]
