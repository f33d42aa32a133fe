#!/usr/bin/env bash
# Data written through a shared file mapping and synced outlives the machine: on a copy of the
# card, boots the kernel and checks that /data/persist.bin does not hold the pattern yet
# (`filemap 11` fails), boots again and writes it through a shared mapping with msync
# (`filemap 10`), ends QEMU at once with SIGKILL (no shutdown, as pulling the power), then boots a
# third time with the same card and reads it back (`filemap 11`).
#
#   tests/persist.sh <kernel.elf> <card.img> <log>
set -u
elf=$1 card=$2 log=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
copy=$dir/card.img
cp "$card" "$copy"
mkdir -p "$(dirname "$log")"
: >"$log"
failed=0

# boot <command> <pattern>: boots with the copy, types <command> at the prompt, waits up to 30 s
# for <pattern> in the output, then kills QEMU. Fails when the pattern never shows.
boot() {
  local cmd=$1 pattern=$2 out=$dir/out fifo=$dir/in i ok=1
  rm -f "$fifo" "$out"
  mkfifo "$fifo"
  qemu-system-arm -M raspi2b -m 1G -display none -no-reboot -monitor none -serial stdio \
    -drive "if=sd,format=raw,file=$copy" -kernel "$elf" <"$fifo" >"$out" 2>&1 &
  local qemu=$!
  exec 3>"$fifo"
  for ((i = 0; i < 600; i++)); do grep -q 'pi2> ' "$out" && break; sleep 0.1; done
  printf '%s\r' "$cmd" >&3
  for ((i = 0; i < 300; i++)); do
    if grep -qE -- "$pattern" "$out"; then ok=0; break; fi
    sleep 0.1
  done
  kill -9 "$qemu" 2>/dev/null; wait "$qemu" 2>/dev/null
  exec 3>&-
  echo "== boot: $cmd" >>"$log"
  cat "$out" >>"$log"
  return $ok
}

check() {
  if "$@"; then echo "persist: ok   $what"; else echo "persist: FAIL $what"; failed=1; fi
}
what="the fresh card does not hold the pattern"
check boot "run /bin/filemap 11" 'filemap: FAIL: word 0 is 0x0 after the restart'
what="the pattern is written through a shared mapping and synced"
check boot "run /bin/filemap 10" 'filemap persist: written and synced'
what="after QEMU was killed and started again, the pattern reads back"
check boot "run /bin/filemap 11" 'filemap persist: all 2048 words read back after the restart'
[ "$failed" -eq 0 ] && echo "persist: all passed" || echo "persist: see $log"
exit "$failed"
