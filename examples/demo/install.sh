# The demo's installer (`cargo xtask demo`): puts a small root filesystem
# on the blank virtual disk, then writes /iguana/mountlist so that iguana
# switch_roots into it. Its image carries the system to install under /os.
set -e
disk=/dev/vda
[ -b "$disk" ] || { echo "install: no disk $disk" >&2; exit 1; }
echo "install: ext2 filesystem labelled demo-root on $disk"
busybox mke2fs -L demo-root "$disk" > /dev/null
busybox mkdir -p /mnt
busybox mount -t ext2 "$disk" /mnt
echo "install: copying the system (busybox, /sbin/init)"
busybox cp -a /os/. /mnt/
busybox mkdir -p /mnt/bin /mnt/proc /mnt/sys /mnt/dev /mnt/run /mnt/tmp /mnt/var/log
busybox cp /bin/busybox /mnt/bin/busybox
for applet in sh cat echo ls tr poweroff; do busybox ln -s busybox "/mnt/bin/$applet"; done
busybox umount /mnt
echo "LABEL=demo-root / rw" > /iguana/mountlist
echo "install: done; /iguana/mountlist: $(cat /iguana/mountlist)"
