# Rescue: an SSH-less debug environment. Writes what the machine is made of
# to /iguana/inventory.json (later containers and the installed system can
# read it), prints it, and with RESCUE_SHELL=1 in its env stays on the
# console as a shell (the job container's stdin is the console).
# Run it as: rd.iguana.containers=REGISTRY/rescue
bb=busybox
json_list() { # name=value pairs on stdin -> JSON objects, comma-separated
  first=1
  while read -r line; do
    [ "$first" = 1 ] || printf ', '
    first=0
    printf '{%s}' "$line"
  done
}
cpus=$($bb grep -c '^processor' /proc/cpuinfo)
model=$($bb grep -m1 'model name' /proc/cpuinfo | $bb sed 's/.*: //; s/["\\]//g')
mem_kib=$($bb awk '/^MemTotal:/ {print $2}' /proc/meminfo)
disks=$(for d in /sys/class/block/*; do
  [ -e "$d" ] || continue  # no block devices: the glob stays unexpanded
  [ -e "$d/partition" ] && continue
  n=${d##*/}; case "$n" in loop*|ram*) continue;; esac
  echo "\"name\": \"$n\", \"sectors\": $(cat "$d/size")"
done | json_list)
nics=$(for n in /sys/class/net/*; do
  [ -e "$n" ] || continue
  name=${n##*/}; [ "$name" = lo ] && continue
  echo "\"name\": \"$name\", \"mac\": \"$(cat "$n/address")\", \"state\": \"$(cat "$n/operstate")\""
done | json_list)
cat > /iguana/inventory.json <<JSON
{"cpus": $cpus, "cpu_model": "$model", "memory_kib": $mem_kib, "disks": [$disks], "nics": [$nics], "machine_id": "$(cat /iguana/machine-id)"}
JSON
echo "inventory: $(cat /iguana/inventory.json)"
if [ "$RESCUE_SHELL" = 1 ]; then
  echo "rescue shell (exit to continue)"
  exec $bb sh
fi
