#!/usr/bin/env bash
# Paging to swap under memory pressure: boots the normal kernel on a copy of the card whose
# cmdline.txt says mem=16M (about 2,300 frames for processes; the swap partition holds 16,384
# pages), then through the shell:
#   - one process writes a pattern over three times the RAM it can have and reads it all back;
#   - three such processes at once;
#   - a forked pair sharing its pages copy on write, each side rewriting its own copy;
#   - a private file mapping read through rounds of anonymous pressure;
#   - a shared memory object pushed out by anonymous pressure, then written by a forked child;
#   - a shared file mapping whose written pages are unmapped, written back and dropped;
#   - a process asking for more than RAM and swap hold together is killed by the out-of-memory
#     rule, and the kernel goes on;
# and checks that afterwards swap is empty again and free frames (with the page cache's) are
# back where they started.
#
#   tests/swap.sh <kernel.elf> <card.img> <log>
set -u
elf=$1 card=$2 log=$3
dir=$(mktemp -d)
fifo=$dir/serial-in
copy=$dir/card.img
cp "$card" "$copy"
printf 'mem=16M\n' >"$dir/cmdline.txt"
mcopy -o -i "$copy@@1M" "$dir/cmdline.txt" ::cmdline.txt
mkdir -p "$(dirname "$log")"
: >"$log"
mkfifo "$fifo"
qemu-system-arm -M raspi2b -m 1G -display none -no-reboot -monitor none -serial stdio \
  -drive "if=sd,format=raw,file=$copy,cache=unsafe" -kernel "$elf" <"$fifo" >"$log" 2>&1 &
qemu=$!
exec 3>"$fifo"
failed=0 passed=0
cleanup() { exec 3>&-; kill "$qemu" 2>/dev/null; wait "$qemu" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

who=swap
# shellcheck source=tests/serial.sh
. "$(dirname "$0")/serial.sh"
# The free frames plus the page cache's pages and the kernel heap's (which keeps the frames it
# grew by, e.g. for the record of pages in swap), from a meminfo reply.
free_or_cached() {
  local free percore cached heap
  free=$(reply | grep -oE 'frames +: [0-9]+ total, [0-9]+ free' | grep -oE '[0-9]+ free' | grep -oE '[0-9]+')
  # Free frames kept in the cores' frame caches are free too.
  percore=$(reply | grep -oE '[0-9]+ more free in the cores' | grep -oE '^[0-9]+')
  cached=$(reply | grep -oE 'cache +: [0-9]+ pages' | grep -oE '[0-9]+')
  heap=$(reply | grep -oE 'heap +: [0-9]+ KiB' | grep -oE '[0-9]+')
  echo $((free + ${percore:-0} + cached + heap / 4))
}

expect "boot with mem=16M and the swap partition" 'swap +: slot 1, type 0x82' 60
expect "the kernel uses 16 MiB" 'RAM in use +: 16 MiB of' 5
expect "the shell" 'pi2> ' 30
# The boot demos end first.
for ((i = 0; i < 300; i++)); do
  grep -qE '\[kernel\] pid 1 exited' "$log" && grep -qE '\[kernel\] pid 2 exited' "$log" && break
  sleep 0.1
done
send "meminfo";                      expect "meminfo shows swap" 'swap +: 0 of 16384 slots used' 10
base=$(free_or_cached)
send "run /bin/pressure 7000";       expect "7000 pages (3x the RAM a process can have) read back" 'pressure: ok, 7000 pages' 240
send "meminfo";                      expect "pages went out to swap and came back" 'swap +: 0 of 16384 slots used \(0 of 65536 KiB\); [1-9][0-9]* pages out \([0-9]+ of shared objects\), [1-9][0-9]* in' 10
send "run /bin/pressure 2400"
send "run /bin/pressure 2400"
send "run /bin/pressure 2400"
mark=$(( $(stat -c %s "$log") - 300 ))
expect "three processes of 2400 pages at once read back" 'pressure: ok, 2400 pages' 300 3
send "run /bin/pressure 0x10c00";    expect "a forked pair keeps its copy-on-write pages apart under pressure" 'pressure: ok, a forked pair' 300
send "run /bin/pressure 0x20c00";    expect "a file mapping reads right under pressure" 'pressure: ok, a file mapping' 300
send "run /bin/pressure 0x30a00";    expect "a shared memory object keeps its pages through pressure and a fork" 'pressure: ok, a shared object' 300
send "meminfo";                      expect "shared-object pages went to swap too" 'pages out \([1-9][0-9]* of shared objects\)' 10
send "run /bin/pressure 0x40c00";    expect "a shared file mapping keeps its writes under pressure" 'pressure: ok, a shared file mapping' 300
# RAM and swap both exhausted (25,000 pages: more than the 16,384 slots and the RAM together):
# the biggest process is killed with its reason, the kernel goes on.
send "run /bin/pressure 25000";      expect "with RAM and swap exhausted the biggest process is killed" 'killed: out of memory: RAM and swap exhausted, and it held the most pages' 400
send "run hello";                    expect "the kernel goes on" 'hello from pid [0-9]+' 20
                                     expect "hello ends" 'exited with code 0' 20
# Let the last exits and the flusher settle, then compare.
sleep 1
send "meminfo";                      expect "swap is empty again" 'swap +: 0 of 16384 slots used' 10
now=$(free_or_cached)
if [ "$now" = "$base" ]; then
  echo "swap: ok   free frames (with the cache's and the heap's) back where they started ($base)"
  passed=$((passed + 1))
else
  echo "swap: FAIL free frames (with the cache's and the heap's): $base before, $now after"
  failed=$((failed + 1))
fi
if [ "$(grep -c 'killed' "$log")" -ne 1 ]; then
  echo "swap: FAIL processes were killed other than the out-of-memory one:"; grep 'killed' "$log" | head -3
  failed=$((failed + 1))
fi
echo "swap: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
