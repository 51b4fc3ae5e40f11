#!/bin/bash
# shellcheck shell=bash
# XHV devstack plugin: installs XHV and enables it through nova.conf and
# cinder.conf.  Sourced by devstack (stack.sh, unstack.sh, clean.sh) with
# $1 = mode and $2 = phase; uses devstack's iniset/iniget/inidelete,
# pip_install and die.

XHV_CINDER_DRIVER=cinder_xhv.driver.XHVVolumeDriver
XHV_NOVA_DRIVER=xhv.XHVDriver
XHV_KNOWN_BACKENDS="libvirt vmware hyperv xenapi"

# devstack copies $NOVA_CONF to $NOVA_CPU_CONF (what nova-compute reads)
# when it starts nova-compute, after post-config: write both, so the
# settings hold in every phase and on a repeated stack.sh.
function xhv_nova_confs {
    local conf=${NOVA_CONF:-/etc/nova/nova.conf}
    echo "$conf"
    if [[ -n "${NOVA_CPU_CONF:-}" && "$NOVA_CPU_CONF" != "$conf" ]]; then
        echo "$NOVA_CPU_CONF"
    fi
}

function xhv_check_settings {
    local known=0 b
    for b in $XHV_KNOWN_BACKENDS; do
        [[ "$XHV_BACKEND" == "$b" ]] && known=1
    done
    if [[ $known == 0 ]]; then
        die $LINENO "XHV_BACKEND=$XHV_BACKEND: use one of: $XHV_KNOWN_BACKENDS"
    fi
    # The backend must be one this XHV ships (its stevedore entry point).
    if ! grep -Eq "^ +$XHV_BACKEND = nova_xhv\.backends" "$XHV_DIR/setup.cfg"; then
        die $LINENO "XHV_BACKEND=$XHV_BACKEND: $XHV_DIR has no such backend yet"
    fi
    if [[ "$XHV_BACKEND" == xenapi ]]; then
        local x
        for x in XHV_XENAPI_URL XHV_XENAPI_PASSWORD; do
            if [[ -z "${!x}" ]]; then
                die $LINENO "XHV_BACKEND=xenapi needs $x in local.conf"
            fi
        done
    fi
    if [[ "$XHV_BACKEND" == vmware ]]; then
        local v
        for v in XHV_VMWARE_HOST XHV_VMWARE_USERNAME XHV_VMWARE_PASSWORD \
                 XHV_VMWARE_CLUSTER; do
            if [[ -z "${!v}" ]]; then
                die $LINENO "XHV_BACKEND=vmware needs $v in local.conf"
            fi
        done
    fi
    if [[ "$XHV_BACKEND" == hyperv ]]; then
        local v
        for v in XHV_HYPERV_HOST XHV_HYPERV_USERNAME XHV_HYPERV_PASSWORD; do
            if [[ -z "${!v}" ]]; then
                die $LINENO "XHV_BACKEND=hyperv needs $v in local.conf"
            fi
        done
    fi
}

# XHV_EXTRA_OPTS items look like section:key=value.
function xhv_opt_key {
    local item=${1#*:}
    echo "${item%%=*}"
}

function install_xhv {
    local extra=""
    case "$XHV_BACKEND" in
        vmware) extra="[vmware]" ;;
        hyperv) extra="[hyperv]" ;;
        xenapi) extra="[xenapi]" ;;
    esac
    # pip_install honours devstack's upper constraints.
    pip_install "${XHV_DIR}${extra}"
}

function configure_xhv_nova {
    local conf
    for conf in $(xhv_nova_confs); do
        configure_xhv_nova_file "$conf"
    done
}

function configure_xhv_nova_file {
    local conf=$1
    # Remember the driver devstack chose ("-": none), for unstack.
    local previous
    previous=$(iniget "$conf" DEFAULT compute_driver)
    if [[ "$previous" != "$XHV_NOVA_DRIVER" ]]; then
        iniset "$conf" xhv devstack_previous_compute_driver "${previous:--}"
    fi
    iniset "$conf" DEFAULT compute_driver "$XHV_NOVA_DRIVER"
    iniset "$conf" xhv backend "$XHV_BACKEND"
    if [[ -n "$XHV_EXCHANGE_SECRET" ]]; then
        iniset "$conf" xhv exchange_secret "$XHV_EXCHANGE_SECRET"
    fi
    local item
    for item in $XHV_EXTRA_OPTS; do
        iniset "$conf" "${item%%:*}" "$(xhv_opt_key "$item")" "${item#*=}"
    done
    case "$XHV_BACKEND" in
        xenapi)
            iniset "$conf" xhv_xenapi url "$XHV_XENAPI_URL"
            iniset "$conf" xhv_xenapi username "$XHV_XENAPI_USERNAME"
            iniset "$conf" xhv_xenapi password "$XHV_XENAPI_PASSWORD"
            iniset "$conf" xhv_xenapi insecure "$XHV_XENAPI_INSECURE"
            local xopt
            for xopt in ca_file sr network_map default_network; do
                local xvar="XHV_XENAPI_${xopt^^}"
                if [[ -n "${!xvar}" ]]; then
                    iniset "$conf" xhv_xenapi "$xopt" "${!xvar}"
                fi
            done
            ;;
        vmware)
            iniset "$conf" xhv_vmware host "$XHV_VMWARE_HOST"
            iniset "$conf" xhv_vmware port "$XHV_VMWARE_PORT"
            iniset "$conf" xhv_vmware username "$XHV_VMWARE_USERNAME"
            iniset "$conf" xhv_vmware password "$XHV_VMWARE_PASSWORD"
            iniset "$conf" xhv_vmware cluster_name "$XHV_VMWARE_CLUSTER"
            if [[ -n "$XHV_VMWARE_CA_FILE" ]]; then
                iniset "$conf" xhv_vmware ca_file "$XHV_VMWARE_CA_FILE"
            fi
            iniset "$conf" xhv_vmware insecure "$XHV_VMWARE_INSECURE"
            ;;
        hyperv)
            iniset "$conf" xhv_hyperv host "$XHV_HYPERV_HOST"
            iniset "$conf" xhv_hyperv username "$XHV_HYPERV_USERNAME"
            iniset "$conf" xhv_hyperv password "$XHV_HYPERV_PASSWORD"
            iniset "$conf" xhv_hyperv vm_path "$XHV_HYPERV_VM_PATH"
            iniset "$conf" xhv_hyperv smb_share "$XHV_HYPERV_SMB_SHARE"
            if [[ -n "$XHV_HYPERV_CA_FILE" ]]; then
                iniset "$conf" xhv_hyperv ca_file "$XHV_HYPERV_CA_FILE"
            fi
            if [[ -n "$XHV_HYPERV_VSWITCH_MAPPINGS" ]]; then
                iniset "$conf" xhv_hyperv vswitch_mappings \
                    "$XHV_HYPERV_VSWITCH_MAPPINGS"
            fi
            ;;
    esac
}

# [libvirt] virt_type / cpu_mode / cpu_models / cpu_model_extra_flags that
# really start a guest on this host (xhv-guest-probe boots a tiny test disk
# with Nova's default, then host-model and host-passthrough without
# arch-capabilities, then TCG).  Only where the operator chose none: a
# cpu_mode, cpu_models or extra flags already in nova-cpu.conf,
# LIBVIRT_CPU_MODE, or a virt_type other than kvm are kept as they are.
function configure_xhv_libvirt_cpu {
    [[ "$XHV_BACKEND" == libvirt ]] || return 0
    [[ "${XHV_PROBE_LIBVIRT_CPU,,}" == true ]] || return 0
    local cpu_conf=${NOVA_CPU_CONF:-${NOVA_CONF:-/etc/nova/nova.conf}}
    local set_by_operator="${LIBVIRT_CPU_MODE:-}" opt
    # What an earlier stack.sh of this plugin wrote is ours to redo.
    if ! grep -q '^devstack_previous_virt_type *=' "$cpu_conf"; then
        for opt in cpu_mode cpu_models cpu_model_extra_flags; do
            set_by_operator+=$(iniget "$cpu_conf" libvirt "$opt")
        done
    fi
    local virt_type
    virt_type=$(iniget "$cpu_conf" libvirt virt_type)
    if [[ -n "$set_by_operator" || ( -n "$virt_type" && "$virt_type" != kvm ) ]]; then
        echo "xhv: [libvirt] CPU settings chosen by the operator: not probed"
        return 0
    fi
    local out
    if ! out=$($XHV_GUEST_PROBE --output shell); then
        echo "xhv: WARNING: $XHV_GUEST_PROBE found no [libvirt] setting" \
             "that starts a guest here; [libvirt] left as it is"
        return 0
    fi
    local XHV_LIBVIRT_VIRT_TYPE="" XHV_LIBVIRT_CPU_MODE=""
    local XHV_LIBVIRT_CPU_MODELS="" XHV_LIBVIRT_CPU_MODEL_EXTRA_FLAGS=""
    # Shell-quoted NAME=value lines of these four variables only.
    eval "$out"
    local conf
    echo "xhv: [libvirt] virt_type=$XHV_LIBVIRT_VIRT_TYPE" \
         "cpu_mode=${XHV_LIBVIRT_CPU_MODE:-default}" \
         "cpu_model_extra_flags=$XHV_LIBVIRT_CPU_MODEL_EXTRA_FLAGS" \
         "(xhv-guest-probe)"
    for conf in $(xhv_nova_confs); do
        if ! grep -q '^devstack_previous_virt_type *=' "$conf"; then
            iniset "$conf" xhv devstack_previous_virt_type \
                "$(iniget "$conf" libvirt virt_type)"
        fi
        for opt in cpu_mode cpu_models cpu_model_extra_flags; do
            inidelete "$conf" libvirt "$opt"
        done
        iniset "$conf" libvirt virt_type "$XHV_LIBVIRT_VIRT_TYPE"
        [[ -n "$XHV_LIBVIRT_CPU_MODE" ]] && \
            iniset "$conf" libvirt cpu_mode "$XHV_LIBVIRT_CPU_MODE"
        [[ -n "$XHV_LIBVIRT_CPU_MODELS" ]] && \
            iniset "$conf" libvirt cpu_models "$XHV_LIBVIRT_CPU_MODELS"
        [[ -n "$XHV_LIBVIRT_CPU_MODEL_EXTRA_FLAGS" ]] && \
            iniset "$conf" libvirt cpu_model_extra_flags \
                "$XHV_LIBVIRT_CPU_MODEL_EXTRA_FLAGS"
    done
    return 0
}

# unstack: remove what configure_xhv_libvirt_cpu wrote.
function unconfigure_xhv_libvirt_cpu_file {
    local conf=$1 previous opt
    grep -q '^devstack_previous_virt_type *=' "$conf" || return 0
    previous=$(iniget "$conf" xhv devstack_previous_virt_type)
    if [[ -n "$previous" ]]; then
        iniset "$conf" libvirt virt_type "$previous"
    else
        inidelete "$conf" libvirt virt_type
    fi
    for opt in cpu_mode cpu_models cpu_model_extra_flags; do
        inidelete "$conf" libvirt "$opt"
    done
    inidelete "$conf" xhv devstack_previous_virt_type
}

function configure_xhv_cinder {
    local section=$XHV_CINDER_BACKEND conf=${CINDER_CONF:-/etc/cinder/cinder.conf}
    [[ -z "$section" || ! -f "$conf" ]] && return 0
    local inner
    inner=$(iniget "$conf" "$section" volume_driver)
    if [[ -z "$inner" ]]; then
        die $LINENO "cinder.conf has no volume_driver in [$section]" \
            "(XHV_CINDER_BACKEND)"
    fi
    if [[ "$inner" != "$XHV_CINDER_DRIVER" ]]; then
        iniset "$conf" "$section" xhv_inner_volume_driver "$inner"
        iniset "$conf" "$section" volume_driver "$XHV_CINDER_DRIVER"
    fi
}

# glanceclient streams uploads of unknown size (Cinder's upload to image,
# Nova's snapshots) as 1 MiB HTTP chunks; uWSGI refuses any chunk over its
# chunked-input-limit (default 1 MiB: a chunk needs 2 bytes more).
# devstack's Apache re-chunks bodies in front of Glance's uWSGI, but that
# uWSGI's own http-socket (worker_self_reference_url) takes clients
# directly.  configure_glance rewrites the file on every stack.sh, before
# post-config; a higher limit already there is kept.
function configure_xhv_glance {
    local conf=${GLANCE_UWSGI_CONF:-} limit=$XHV_GLANCE_CHUNKED_INPUT_LIMIT
    [[ -z "$limit" || -z "$conf" || ! -f "$conf" ]] && return 0
    local current
    current=$(iniget "$conf" uwsgi chunked-input-limit)
    if [[ -z "$current" || "$current" -lt "$limit" ]]; then
        iniset "$conf" uwsgi chunked-input-limit "$limit"
    fi
}

# unstack: give nova-compute and Cinder back the drivers they had.
function unconfigure_xhv {
    local conf
    for conf in $(xhv_nova_confs); do
        unconfigure_xhv_nova_file "$conf"
    done
    unconfigure_xhv_cinder
}

function unconfigure_xhv_nova_file {
    local conf=$1 previous
    if [[ -f "$conf" ]]; then
        unconfigure_xhv_libvirt_cpu_file "$conf"
        if [[ "$(iniget "$conf" DEFAULT compute_driver)" == "$XHV_NOVA_DRIVER" ]]; then
            previous=$(iniget "$conf" xhv devstack_previous_compute_driver)
            if [[ -z "$previous" || "$previous" == "-" ]]; then
                inidelete "$conf" DEFAULT compute_driver
            else
                iniset "$conf" DEFAULT compute_driver "$previous"
            fi
        fi
        local opt
        for opt in backend devstack_previous_compute_driver exchange_secret; do
            inidelete "$conf" xhv "$opt"
        done
        for opt in url username password insecure ca_file sr network_map \
                   default_network; do
            inidelete "$conf" xhv_xenapi "$opt"
        done
        for opt in host port username password cluster_name ca_file insecure; do
            inidelete "$conf" xhv_vmware "$opt"
        done
        for opt in host username password vm_path smb_share ca_file \
                   vswitch_mappings; do
            inidelete "$conf" xhv_hyperv "$opt"
        done
        local item
        for item in $XHV_EXTRA_OPTS; do
            inidelete "$conf" "${item%%:*}" "$(xhv_opt_key "$item")"
        done
    fi
}

function unconfigure_xhv_cinder {
    local cconf=${CINDER_CONF:-/etc/cinder/cinder.conf} section=$XHV_CINDER_BACKEND
    if [[ -n "$section" && -f "$cconf" ]]; then
        local inner
        inner=$(iniget "$cconf" "$section" xhv_inner_volume_driver)
        if [[ -n "$inner" ]]; then
            iniset "$cconf" "$section" volume_driver "$inner"
            inidelete "$cconf" "$section" xhv_inner_volume_driver
        fi
    fi
}

function cleanup_xhv {
    unconfigure_xhv
    # pip's uninstall also removes nova/virt/xhv, XHV's only file in Nova.
    pip_uninstall openstack-xhv
}

if [[ "$1" == "stack" ]]; then
    case "$2" in
        pre-install)
            xhv_check_settings
            ;;
        install)
            echo_summary "Installing XHV ($XHV_BACKEND backend)"
            install_xhv
            ;;
        post-config)
            echo_summary "Configuring Nova, Cinder and Glance's uWSGI for XHV"
            configure_xhv_nova
            configure_xhv_libvirt_cpu
            configure_xhv_cinder
            configure_xhv_glance
            ;;
    esac
elif [[ "$1" == "unstack" ]]; then
    unconfigure_xhv
elif [[ "$1" == "clean" ]]; then
    cleanup_xhv
fi
