# The demo container (`cargo xtask demo`): what an iguana-aware container
# sees. It runs privileged, on the host network, with /iguana shared.
echo "Hello from a container that iguana pulled and started"
echo "kernel $(busybox uname -r), machine id $(cat /iguana/machine-id)"
echo "iguana=$iguana is in my environment"
busybox ip -4 -o addr show | grep -v ' lo '
echo "I can see the host's disks:"; ls /dev | grep -E '^(vd|sd|nvme)' || echo "(none attached)"
echo "hello done: the install job comes next"
