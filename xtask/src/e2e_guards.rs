//! The `container-guards` scenario of `cargo xtask e2e`: one boot, two
//! jobs (`rd.iguana.containers=guards-a,guards-b`), proving what a
//! container inherits from PID 1 and what bounds it:
//!
//! - signals: no ignored and no blocked signal (`SigIgn`, `SigBlk` zero),
//!   so `yes | head -1` ends `yes` by SIGPIPE (status 141 under pipefail);
//! - cgroup limits: its `pids.max` and `memory.max` are what README promises
//!   (all but iguana's reserve), computed again here from /proc;
//! - mounts below /iguana: `guards-a` mounts a tmpfs on /iguana/mnt and
//!   writes a file, `guards-b` reads it, and iguana unmounts it before the
//!   reboot;
//! - output: `guards-a` ends with a megabyte of NUL bytes without a newline;
//!   the console shows the one-line notice, and nothing `guards-a` prints
//!   after it (the console budget of 256 KiB is spent).

/// Marks the lines of both containers.
pub const GUARDS: &str = "IGUANA-E2E guards";

/// What the console must show (see `e2e::Scenario::expect`).
pub const EXPECT: &[&[&str]] = &[
    &["[guards-a] IGUANA-E2E guards SigIgn: 0000000000000000"],
    &["[guards-a] IGUANA-E2E guards SigBlk: 0000000000000000"],
    &["[guards-a] IGUANA-E2E guards pipefail status 141"],
    &["phase container-started job=guards-a", "memory.max=", "pids.max="],
    &["[guards-a] IGUANA-E2E guards cgroup /sys/fs/cgroup/iguana/guards-a memory.max ok"],
    &["[guards-a] IGUANA-E2E guards cgroup /sys/fs/cgroup/iguana/guards-a pids.max ok"],
    &["[guards-a] IGUANA-E2E guards mounted /iguana/mnt"],
    &["[guards-b] IGUANA-E2E guards b saw from-a"],
    &["iguana: umount /iguana/mnt"],
    &["[guards-a] console output limit reached (256 KiB): the rest is only in /run/iguana/logs/guards-a.log"],
    &["job guards-b succeeded"],
];

/// What it must not show.
pub const REJECT: &[&[&str]] = &[
    &[GUARDS, "bad"],
    &["memory.max=max"],
    &["pids.max=max"],
    // Printed by guards-a after its flood: past the console budget.
    &["IGUANA-E2E guards hidden"],
    &["job guards-a failed"],
];

/// `guards-a`: signals, limits, a mount below /iguana, then a flood.
pub fn script_a() -> String {
    format!(
        r#"busybox grep -E '^Sig(Ign|Blk)' /proc/self/status | while read key value; do echo "{GUARDS} $key $value"; done
busybox sh -c 'set -o pipefail; busybox yes | busybox head -1 >/dev/null'
echo "{GUARDS} pipefail status $?"
# The limits README promises: all but the larger of 1/8 and a floor, at least half.
rest() {{ r=$(($1 / 8)); [ $r -lt $2 ] && r=$2; [ $r -gt $(($1 / 2)) ] && r=$(($1 / 2)); echo $(($1 - r)); }}
kib=$(busybox awk '/^MemTotal:/ {{print $2}}' /proc/meminfo)
want_mem=$(rest $((kib * 1024)) 33554432)
tasks=$(cat /proc/sys/kernel/pid_max); threads=$(cat /proc/sys/kernel/threads-max)
[ $threads -lt $tasks ] && tasks=$threads
want_pids=$(rest $tasks 128)
cg=/sys/fs/cgroup$(busybox sed -n 's/^0:://p' /proc/self/cgroup)
for pair in memory.max:$want_mem pids.max:$want_pids; do
  file=${{pair%%:*}}; want=${{pair#*:}}; got=$(cat $cg/$file)
  if [ "$got" = "$want" ]; then echo "{GUARDS} cgroup $cg $file ok $got"; else echo "{GUARDS} cgroup $cg $file bad: $got, want $want"; fi
done
busybox mkdir -p /iguana/mnt
if busybox mount -t tmpfs guards /iguana/mnt && echo from-a > /iguana/mnt/file; then
  echo "{GUARDS} mounted /iguana/mnt"
else
  echo "{GUARDS} mount bad"
fi
busybox head -c 1048576 /dev/zero
echo
echo "{GUARDS} hidden"
"#
    )
}

/// `guards-b`: what `guards-a` mounted is here.
pub fn script_b() -> String {
    format!("echo \"{GUARDS} b saw $(cat /iguana/mnt/file 2>&1)\"\n")
}
