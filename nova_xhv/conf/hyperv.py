"""The ``[xhv_hyperv]`` group: XHV's Hyper-V backend (pywinrm, smbprotocol).

One nova-compute (on Linux) drives one Hyper-V host over WinRM, and reads
and writes its VM storage over SMB.
"""

from oslo_config import cfg

xhv_hyperv_group = cfg.OptGroup(
    'xhv_hyperv', title='XHV Hyper-V backend',
    help='Options of XHV\'s Hyper-V backend ([xhv] backend = hyperv). One '
         'nova-compute drives one Hyper-V host through WinRM (PowerShell '
         'Hyper-V cmdlets) and moves its disks over SMB.')

hyperv_opts = [
    cfg.HostAddressOpt('host',
                       help='Hyper-V host name or IP address (WinRM and '
                            'SMB).'),
    cfg.PortOpt('port',
                help='WinRM port. Default: 5986 with use_https, 5985 '
                     'without.'),
    cfg.BoolOpt('use_https', default=True,
                help='Talk to WinRM over HTTPS. Over HTTP, ntlm, kerberos '
                     'and credssp still encrypt every message (WinRM '
                     'message encryption); basic is refused.'),
    cfg.StrOpt('transport', default='ntlm',
               choices=[('ntlm', 'NTLM (local or domain account)'),
                        ('kerberos', 'Kerberos (domain; needs a ticket and '
                                     'pywinrm[kerberos])'),
                        ('credssp', 'CredSSP (needs pywinrm[credssp])'),
                        ('basic', 'Basic (local account; HTTPS only)')],
               help='WinRM authentication.'),
    cfg.StrOpt('username',
               help='Account on the Hyper-V host (DOMAIN\\user or user), '
                    'member of "Hyper-V Administrators" with write access '
                    'to the VM storage share.'),
    cfg.StrOpt('password', secret=True,
               help='Password of that account, for WinRM and SMB. Never '
                    'logged.'),
    cfg.StrOpt('ca_file',
               help='PEM file with the CA certificate(s) that signed the '
                    'host\'s WinRM certificate. Empty: the system trust '
                    'store.'),
    cfg.BoolOpt('insecure', default=False,
                help='Do not verify the WinRM TLS certificate. For labs '
                     'only: anyone on the path can then read the '
                     'credentials.'),
    cfg.IntOpt('operation_timeout', default=60, min=1,
               help='Seconds one WinRM operation (one PowerShell script) '
                    'may take before it fails.'),
    cfg.StrOpt('vm_path', default='C:\\ClusterStorage\\XHV',
               help='Folder on the host where instance VMs and their VHDX '
                    'files live (one subfolder per instance). Must be the '
                    'folder the SMB share exposes.'),
    cfg.StrOpt('smb_share', default='XHV',
               help='Name of the SMB share on the host that exposes '
                    'vm_path.'),
    cfg.PortOpt('smb_port', default=445,
                help='SMB port of the host.'),
    cfg.BoolOpt('smb_encrypt', default=True,
                help='Require SMB 3 encryption for disk transfers.'),
    cfg.IntOpt('generation', default=1, choices=[1, 2],
               help='VM generation for images that do not ask for UEFI '
                    '(hw_firmware_type=uefi or hw_machine_type=hyperv-gen2 '
                    'give generation 2).'),
    cfg.ListOpt('vswitch_mappings', default=[],
                help='physical_network:vSwitch pairs: the Hyper-V virtual '
                     'switch a port on a Neutron network of that physical '
                     'network is plugged into (split at the first colon). '
                     'Every vSwitch named must exist on the host '
                     '(checked at start).'),
    cfg.ListOpt('volume_shares', default=[],
                help='<nfs host>:<export path>=\\\\<smb host>\\<share> '
                     'pairs: the SMB share under which this Hyper-V host '
                     'reaches the files of an NFS export Cinder keeps XHV '
                     'volumes on (a dual-protocol filer; an export below '
                     'a mapped one is the same sub-folder of the share). '
                     'Volumes are attached in place as fixed VHDs (see '
                     'doc/source/cinder.rst); SMB port, user, password '
                     'and encryption are the smb_* / username / password '
                     'options. Empty: no volume attaches here.'),
    cfg.StrOpt('staging_dir', default='$state_path/xhv-hyperv',
               help='Local directory for disks on their way in or out '
                    '(image conversion, snapshots).'),
]


def list_opts():
    return [(xhv_hyperv_group, hyperv_opts)]
