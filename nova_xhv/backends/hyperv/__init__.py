"""XHV's Hyper-V backend: a Linux nova-compute driving one Hyper-V host.

PowerShell Hyper-V cmdlets over WinRM (pywinrm) for the VMs, SMB
(smbprotocol) for their VHDX files.  ``backend`` holds the backend,
``facts`` the family's facts, ``script`` the one way values enter a
PowerShell script, ``winrm`` the WinRM session and ``storage`` the SMB
share.
"""
