#!/bin/bash
# Stand-in for xhv-guest-probe in the devstack plugin tests: logs its call
# and prints what $STANDIN_PROBE_OUTPUT holds (exit 1 when it is "fail").
echo "xhv-guest-probe $*" >> "$STANDIN_LOG"
if [[ "${STANDIN_PROBE_OUTPUT:-}" == fail ]]; then
    echo "xhv: libvirt CPU: no CPU configuration started the guest" >&2
    exit 1
fi
printf '%s\n' "${STANDIN_PROBE_OUTPUT:-XHV_LIBVIRT_VIRT_TYPE=kvm}"
