#!/usr/bin/env bash
# Boots the normal kernel in QEMU raspi2b, types commands into its UART shell through a pipe and
# checks the replies.
#
#   tests/console.sh <kernel.elf> <log> [card.img]
set -u
elf=$1 log=$2 card=${3:-}
drive=()
[ -z "$card" ] || drive=(-drive "if=sd,format=raw,file=$card")
mkdir -p "$(dirname "$log")"
: >"$log"
dir=$(mktemp -d)
fifo=$dir/serial-in
mkfifo "$fifo"
qemu-system-arm -M raspi2b -m 1G -display none -no-reboot -monitor none -serial stdio \
  "${drive[@]}" -kernel "$elf" <"$fifo" >"$log" 2>&1 &
qemu=$!
exec 3>"$fifo"
failed=0 passed=0
cleanup() { exec 3>&-; kill "$qemu" 2>/dev/null; wait "$qemu" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

who=console
# shellcheck source=tests/serial.sh
. "$(dirname "$0")/serial.sh"

expect "boot reaches the shell" 'pi2> ' 60
expect "demo processes print pid and ASID" '\[pid 1 asid [0-9]+\].*' 20
expect "second demo process interleaves" '\[pid 2 asid [0-9]+\]' 20
send "help";                 expect "help lists the commands" 'vmmap \[pid\]'
send "ls";                   expect "ls lists the programs" 'hello +[0-9]+ bytes'
if [ -n "$card" ]; then
  send "ls /bin";            expect "ls /bin lists the programs on the card" 'hello +[0-9]+ bytes'
                             expect "ls /bin lists every program" 'spin +[0-9]+ bytes'
  send "cat /config.txt";    expect "cat prints a file of the card" 'kernel=kernel7.img'
  send "cat /nosuch";        expect "cat of a missing file is reported" 'cat /nosuch: .*no such file'
  send "run /bin/hello";     expect "run /bin/hello starts the program from the card" 'started /bin/hello as pid [0-9]+'
                             expect "hello from the card runs" 'hello from pid [0-9]+ \(asid [0-9]+\)'
  hpid=$(reply | grep -oE 'started /bin/hello as pid [0-9]+' | grep -oE '[0-9]+$')
                             expect "hello from the card ends" "pid ${hpid:-x} exited with code 0" 20
  send "run /bin/thello";    expect "a program built by GCC (Thumb code) runs from the card" 'thello: hello from Thumb code'
  send "run /config.txt";    expect "a file that is not a program is refused" 'run /config.txt: bad program image: not an ELF'
  send "run /bin/filemap 1"; expect "a private file mapping reads only the pages touched" 'filemap private: ok \(2 pages resident'
  send "meminfo";            expect "meminfo shows the page cache" 'cache +: [0-9]+ pages of [0-9]+ files, [0-9]+ dirty; [0-9]+ hits, [0-9]+ misses'
  send "sync";               expect "sync writes the page cache back" 'sync: [0-9]+ pages written back'
fi
send "meminfo";              expect "meminfo: frames" 'frames +: [0-9]+ total, [0-9]+ free, [0-9]+ reserved'
                             expect "meminfo: heap, MMIO, ASIDs" 'asids +: [0-9]+ of 255 in use'
send "frobnicate";           expect "unknown command is reported" 'unknown command `frobnicate`'
send "run nosuch";           expect "unknown program is reported" 'run nosuch: (no such program|/bin/nosuch: no such file)'
send "kill 999";             expect "kill of a missing pid is reported" 'no live process with pid 999'
send "run spin";             expect "run starts a program" 'started spin as pid [0-9]+'
spin=$(reply | grep -oE 'started spin as pid [0-9]+' | grep -oE '[0-9]+$')
send "ps";                   expect "ps shows the spinner running, and its core" "^ +${spin:-x} +0 +(running|ready) +[0-3] .* spin"
send "vmmap ${spin:-0}";     expect "vmmap shows the regions" 'r-x +text'
                             expect "vmmap shows mappings with attributes" '-> 0x[0-9a-f]{8} .*u:r-x WB PXN nG'
send "run hello";            expect "hello runs beside the spinner" 'hello from pid [0-9]+ \(asid [0-9]+\)'
                             expect "hello ends" 'exited with code 0' 20
send "run fault 1";          expect "a faulting process is killed with a report" 'killed: access to kernel memory: read at 0x80008000, pc=0x'
send "kill ${spin:-0}";      expect "kill ends the spinner" "pid ${spin:-x} killed"
send "exits";                expect "exits lists the ends" 'spin +killed: by request'
# The two boot demos end on their own; on a loaded host that can take a while.
for ((i = 0; i < 300; i++)); do
  grep -qE '\[kernel\] pid 1 exited' "$log" && grep -qE '\[kernel\] pid 2 exited' "$log" && break
  sleep 0.1
done
send "meminfo";              expect "no processes left" 'procs +: 0 live'
send "vmmap";                expect "vmmap without pid shows the kernel half" 'kernel half'
send "uptime";               expect "uptime: per-core ticks, busy and idle time, switches" '^ +3 +[0-9]+ +[0-9]+% +[0-9]+% +[0-9]+'

echo "console: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
