#!/usr/bin/env bash
# Checks tests/apt-component.sh on temporary apt trees (APT_CONFIG with Dir::Etc, Dir::State and
# Dir::Cache in a temporary directory), never on this machine's /etc/apt. Needs root (apt-get
# update writes its lists as root), gpg and apt.
#
#   tests/apt-component-test.sh            # offline: a signed local file: repository, a few seconds
#   tests/apt-component-test.sh --network  # also against deb.debian.org with the Debian keyring
#
# Cases: deb822 stanza with Signed-By (the old one-line source conflicted with it), one-line
# sources with and without [signed-by=...], already enabled, Ubuntu, a component the archive does
# not have, a failing apt-get update, and (network) an old one-line source that broke apt.
# ok() always succeeds, so `test && ok ... || bad ...` is an if-then-else here.
# shellcheck disable=SC2015
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
script=$here/apt-component.sh
network=0
[ "${1:-}" = --network ] && network=1

if [ "$(id -u)" -ne 0 ]; then echo "apt-component-test: needs root (apt-get update)" >&2; exit 1; fi
command -v gpg >/dev/null 2>&1 || { echo "apt-component-test: needs gpg" >&2; exit 1; }

top=$(mktemp -d)
trap 'rm -rf -- "$top"' EXIT
arch=$(dpkg --print-architecture)
pass=0 fail=0
ok() { echo "  ok: $*"; pass=$((pass + 1)); }
bad() { echo "  FAIL: $*"; fail=$((fail + 1)); }

# --- a signed local Debian-like archive: file:$top/repo/debian -------------------------------------
export GNUPGHOME=$top/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg -q --batch --passphrase '' --quick-gen-key 'pi2-vm apt test <apt-test@invalid>' ed25519 sign 1d 2>/dev/null
gpg -q --batch --export >"$top/test-keyring.gpg"
gpg -q --batch --passphrase '' --quick-gen-key 'other key <other@invalid>' ed25519 sign 1d 2>/dev/null
gpg -q --batch --export 'other@invalid' >"$top/wrong-keyring.gpg"

# make_suite REPO SUITE COMPONENT...: Packages per component (raspi-firmware in non-free-firmware)
# and an InRelease signed with the test key.
make_suite() {
  local repo=$1 suite=$2 c d
  shift 2
  d=$repo/dists/$suite
  mkdir -p "$d"
  for c in "$@"; do
    mkdir -p "$d/$c/binary-$arch"
    if [ "$c" = non-free-firmware ]; then
      printf '%s\n' 'Package: raspi-firmware' 'Version: 1.20230405+ds-1' 'Architecture: all' \
        'Filename: pool/non-free-firmware/r/raspi-firmware/raspi-firmware_1.20230405+ds-1_all.deb' \
        'Size: 1' 'Description: test stand-in' ''
    else
      printf '%s\n' 'Package: pi2-vm-test' 'Version: 1' 'Architecture: all' \
        'Filename: pool/main/p/pi2-vm-test/pi2-vm-test_1_all.deb' 'Size: 1' 'Description: test' ''
    fi >"$d/$c/binary-$arch/Packages"
  done
  {
    echo "Origin: Debian"
    echo "Suite: $suite"
    echo "Codename: $suite"
    echo "Date: $(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S UTC')"
    echo "Architectures: $arch"
    echo "Components: $*"
    echo "SHA256:"
    for c in "$@"; do
      f=$c/binary-$arch/Packages
      echo " $(sha256sum <"$d/$f" | cut -d' ' -f1) $(stat -c %s "$d/$f") $f"
    done
  } >"$d/Release"
  gpg -q --batch --yes --clearsign -u apt-test@invalid -o "$d/InRelease" "$d/Release"
}
repo=$top/repo/debian
make_suite "$repo" bookworm main non-free-firmware
make_suite "$repo" bookworm-updates main non-free-firmware
nofw=$top/nofw/debian
make_suite "$nofw" bookworm main

# --- one temporary apt tree per case ---------------------------------------------------------------
# new_tree NAME [ID]: sets root, and APT_CONFIG / OS_RELEASE for what follows.
new_tree() {
  root=$top/$1
  mkdir -p "$root"/etc/apt/{sources.list.d,apt.conf.d,preferences.d,trusted.gpg.d} \
    "$root"/var/lib/apt/lists/partial "$root"/var/cache/apt/archives/partial "$root"/var/lib/dpkg \
    "$root"/var/log/apt
  : >"$root/var/lib/dpkg/status"
  cat >"$root/apt.conf" <<EOF
Dir::Etc "$root/etc/apt/";
Dir::State "$root/var/lib/apt/";
Dir::State::status "$root/var/lib/dpkg/status";
Dir::Cache "$root/var/cache/apt/";
Dir::Log "$root/var/log/apt/";
APT::Sandbox::User "root";
Acquire::Languages "none";
EOF
  printf 'ID=%s\nVERSION_CODENAME=%s\n' "${2:-debian}" "${3:-bookworm}" >"$root/os-release"
  export APT_CONFIG=$root/apt.conf OS_RELEASE=$root/os-release
}
# run_script: runs apt-component.sh, keeps its output in $root/out and its status in $rc.
run_script() {
  rc=0
  "$script" >"$root/out" 2>&1 || rc=$?
  sed 's/^/    | /' "$root/out"
}
# (Output captured first: grep -q exiting early would make apt-cache fail on SIGPIPE under pipefail.)
policy() { apt-cache policy "$@" 2>&1 || true; }
apt_clean() { ! grep -q '^E:' <<<"$(policy)"; }
has_candidate() { grep -q 'Candidate: [0-9]' <<<"$(policy raspi-firmware)"; }
no_new_files() { ! ls "$root"/etc/apt/sources.list.d/pi2-vm-* >/dev/null 2>&1; }

echo "== deb822 with Signed-By: the old one-line source breaks apt, the copied stanza does not =="
new_tree deb822
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
# a comment inside the stanza
URIs: file:$repo
Suites: bookworm bookworm-updates
Components: main
Signed-By: $top/test-keyring.gpg
EOF
echo "deb file:$repo bookworm non-free-firmware" >"$root/etc/apt/sources.list.d/old.list"
if grep -q 'Conflicting values set for option Signed-By' <<<"$(policy)"; then
  ok "the old one-line source gives 'Conflicting values set for option Signed-By'"
else
  bad "the old one-line source did not reproduce the conflict"
fi
rm "$root/etc/apt/sources.list.d/old.list"
run_script
[ "$rc" -eq 0 ] && ok "exit 0" || bad "exit $rc"
f=$root/etc/apt/sources.list.d/pi2-vm-non-free-firmware.sources
if [ -f "$f" ] && grep -qx "Signed-By: $top/test-keyring.gpg" "$f" &&
   grep -qx 'Components: non-free-firmware' "$f" && grep -qx 'Suites: bookworm bookworm-updates' "$f"; then
  ok "$(basename "$f"): same URIs, suites and Signed-By, component non-free-firmware"
else
  bad "unexpected $(basename "$f")"; cat "$f" 2>/dev/null || true
fi
apt_clean && ok "apt-cache policy without errors" || bad "apt-cache policy reports errors"
has_candidate && ok "raspi-firmware has a candidate" || bad "no raspi-firmware candidate"
run_script
[ "$rc" -eq 0 ] && grep -q 'already' "$root/out" && ok "second run: nothing to do" || bad "second run: exit $rc"

echo "== one-line sources.list with [signed-by=...] =="
new_tree classic-signed
echo "deb [ signed-by=$top/test-keyring.gpg ] file:$repo bookworm main" >"$root/etc/apt/sources.list"
run_script
f=$root/etc/apt/sources.list.d/pi2-vm-non-free-firmware.list
[ "$rc" -eq 0 ] && ok "exit 0" || bad "exit $rc"
grep -qx "deb \[ signed-by=$top/test-keyring.gpg \] file:$repo bookworm non-free-firmware" "$f" 2>/dev/null &&
  ok "$(basename "$f") has the same [signed-by=...]" || { bad "unexpected $(basename "$f")"; cat "$f" 2>/dev/null || true; }
apt_clean && has_candidate && ok "apt clean, raspi-firmware has a candidate" || bad "apt errors or no candidate"

echo "== one-line sources.list without options (key in trusted.gpg.d) =="
new_tree classic-plain
cp "$top/test-keyring.gpg" "$root/etc/apt/trusted.gpg.d/test.gpg"
printf '%s\n' "deb file:$repo bookworm main" "deb file:$repo bookworm-updates main" >"$root/etc/apt/sources.list"
run_script
f=$root/etc/apt/sources.list.d/pi2-vm-non-free-firmware.list
[ "$rc" -eq 0 ] && ok "exit 0" || bad "exit $rc"
[ "$(grep -v '^#' "$f" 2>/dev/null)" = "deb file:$repo bookworm non-free-firmware" ] &&
  ok "$(basename "$f"): one line for the release suite" || { bad "unexpected $(basename "$f")"; cat "$f" 2>/dev/null || true; }
apt_clean && has_candidate && ok "apt clean, raspi-firmware has a candidate" || bad "apt errors or no candidate"

echo "== deb822 already listing non-free-firmware =="
new_tree already
printf '%s\n' 'Types: deb' "URIs: file:$repo" 'Suites: bookworm' 'Components: main non-free-firmware' \
  "Signed-By: $top/test-keyring.gpg" >"$root/etc/apt/sources.list.d/debian.sources"
run_script
[ "$rc" -eq 0 ] && no_new_files && ok "exit 0, nothing written" || bad "exit $rc or a file was written"

echo "== Ubuntu: skipped with a message =="
new_tree ubuntu ubuntu noble
printf '%s\n' 'Types: deb' 'URIs: http://archive.ubuntu.com/ubuntu' 'Suites: noble' \
  'Components: main restricted' >"$root/etc/apt/sources.list.d/ubuntu.sources"
run_script
[ "$rc" -eq 2 ] && no_new_files && ok "exit 2, nothing written" || bad "exit $rc or a file was written"

echo "== an archive without the component: undone =="
new_tree nofw
printf '%s\n' 'Types: deb' "URIs: file:$nofw" 'Suites: bookworm' 'Components: main' \
  "Signed-By: $top/test-keyring.gpg" >"$root/etc/apt/sources.list.d/debian.sources"
run_script
[ "$rc" -eq 1 ] && no_new_files && ok "exit 1, new source removed" || bad "exit $rc or a file was left"
apt_clean && ok "apt-cache policy without errors" || bad "apt-cache policy reports errors"

echo "== apt-get update failing (wrong key): undone =="
new_tree badkey
printf '%s\n' 'Types: deb' "URIs: file:$repo" 'Suites: bookworm' 'Components: main' \
  "Signed-By: $top/wrong-keyring.gpg" >"$root/etc/apt/sources.list.d/debian.sources"
cp "$root/etc/apt/sources.list.d/debian.sources" "$top/badkey.orig"
run_script
[ "$rc" -eq 1 ] && no_new_files && ok "exit 1, new source removed" || bad "exit $rc or a file was left"
cmp -s "$top/badkey.orig" "$root/etc/apt/sources.list.d/debian.sources" && ok "existing source untouched" ||
  bad "existing source changed"

if [ "$network" -eq 1 ]; then
  key=/usr/share/keyrings/debian-archive-keyring.gpg
  echo "== network: deb822 as on a fresh Debian 12 container, plus the old CI's one-line source =="
  new_tree net-deb822
  printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm bookworm-updates' \
    'Components: main' "Signed-By: $key" >"$root/etc/apt/sources.list.d/debian.sources"
  echo 'deb http://deb.debian.org/debian bookworm non-free-firmware' \
    >"$root/etc/apt/sources.list.d/non-free-firmware.list"
  apt_clean && bad "the old source did not break apt" || ok "the old one-line source breaks apt"
  run_script
  [ "$rc" -eq 0 ] && ok "exit 0" || bad "exit $rc"
  [ ! -e "$root/etc/apt/sources.list.d/non-free-firmware.list" ] && ok "old source removed" || bad "old source left"
  apt_clean && has_candidate && ok "apt clean, raspi-firmware has a candidate" || bad "apt errors or no candidate"
  apt-get update -qq >/dev/null 2>&1 && ok "apt-get update works afterwards" || bad "apt-get update fails afterwards"

  echo "== network: one-line sources.list with [signed-by=...] =="
  new_tree net-classic
  echo "deb [signed-by=$key] http://deb.debian.org/debian bookworm main" >"$root/etc/apt/sources.list"
  run_script
  [ "$rc" -eq 0 ] && ok "exit 0" || bad "exit $rc"
  apt_clean && has_candidate && ok "apt clean, raspi-firmware has a candidate" || bad "apt errors or no candidate"
fi

echo "apt-component-test: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
