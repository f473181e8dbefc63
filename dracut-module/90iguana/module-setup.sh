#!/bin/bash
# dracut module "iguana": the static iguana binary as the initrd's /init.
#
# iguana does everything dracut's own scripts would: early mounts, modalias
# coldplug from /lib/modules/$(uname -r), DHCP, image pulls, containers and
# the handover. So this module brings no systemd, udev or dracut init: build
# with only it,
#
#   dracut --no-hostonly --no-early-microcode -m iguana --force OUT KVER
#
# and nothing else writes /init. (With 99base, its init.sh would also be
# /init; dracut installs modules in order and 99 comes last, so the two must
# not be combined.)
#
# IGUANA_BINARY overrides /usr/bin/iguana (the xtask builds the binary in its
# target directory and does not install it on the build host).
#
# Trust anchors: every /etc/iguana/trust/*.pub of the build host (a PEM
# public key, as `cosign generate-key-pair` writes cosign.pub) goes to the
# same place in the initrd; with one, iguana runs only signed workflows and
# images. IGUANA_TRUST_DIR overrides the directory.

# Only when asked for with -m/--add iguana.
check() {
    return 255
}

depends() {
    return 0
}

installkernel() {
    # Not just the build host's hardware: the initrd boots VMs and bare metal
    # alike, so hostonly is off for these whatever dracut was told.
    hostonly='' instmods \
        virtio virtio_pci virtio_net virtio_blk virtio_scsi virtio_console virtio_rng \
        e1000 e1000e igb ixgbe i40e mlx5_core \
        nvme ahci sd_mod \
        ext4 xfs btrfs vfat nls_cp437 nls_ascii nls_utf8 overlay squashfs \
        af_packet
}

install() {
    local binary="${IGUANA_BINARY:-/usr/bin/iguana}"
    if [[ ! -x $binary ]]; then
        derror "iguana: $binary is missing or not executable"
        return 1
    fi
    # iguana is static: inst_simple copies it without looking for libraries.
    inst_simple "$binary" /init
    chmod 0755 "${initdir}/init"

    inst_simple /etc/ssl/certs/ca-certificates.crt

    local trust="${IGUANA_TRUST_DIR:-/etc/iguana/trust}" key
    if [[ -d $trust ]]; then
        inst_dir /etc/iguana/trust
        for key in "$trust"/*.pub; do
            [[ -f $key ]] || continue
            inst_simple "$key" "/etc/iguana/trust/${key##*/}"
        done
    fi

    # The debug shell (rd.iguana.debug) and the kernel's modprobe helper.
    if inst_multiple -o busybox && [[ -e ${initdir}/usr/bin/busybox || -e ${initdir}/bin/busybox ]]; then
        local bb=/usr/bin/busybox
        [[ -e ${initdir}${bb} ]] || bb=/bin/busybox
        [[ -e ${initdir}/bin/sh ]] || ln_r "$bb" /bin/sh
    fi

    # Mount points and directories iguana uses.
    inst_dir /sysroot
    inst_dir /iguana
    inst_dir /etc/iguana
    inst_dir /run
    inst_dir /tmp
}
