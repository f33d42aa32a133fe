# Helpers for scripts that drive the kernel's UART shell through QEMU's serial port (sourced by
# tests/console.sh and tests/swap.sh). The caller sets `who` (the prefix of its report lines) and
# `log` (QEMU's output), opens the serial input as file descriptor 3, and sets passed=0 failed=0.

mark=0
# expect <what> <pattern> [timeout] [count]: waits until <pattern> (grep -E) shows up <count>
# times (default 1) after the mark.
expect() {
  local what=$1 pattern=$2 limit=${3:-20} count=${4:-1} i
  for ((i = 0; i < limit * 10; i++)); do
    if [ "$(tail -c +"$((mark + 1))" "$log" | grep -cE -- "$pattern")" -ge "$count" ]; then
      echo "$who: ok   $what"
      passed=$((passed + 1))
      return 0
    fi
    sleep 0.1
  done
  echo "$who: FAIL $what (no /$pattern/ x$count within ${limit}s)"
  failed=$((failed + 1))
  return 1
}
# send <line>: types a line (after marking where its reply starts).
send() {
  mark=$(stat -c %s "$log")
  printf '%s\r' "$1" >&3
}
# reply: the output since the last send.
reply() { tail -c +"$((mark + 1))" "$log"; }
