#!/usr/bin/env bash
# Enables Debian's non-free-firmware component, where the raspi-firmware package (the Pi boot files
# bootcode.bin, start.elf, fixup.dat used by tests/mksdcard.sh) lives, for the Debian archive this
# machine already uses. Needs root. Used by tests/deps.sh (group sdcard); can be run by hand:
#
#   sudo tests/apt-component.sh
#
# It never edits an existing file. It copies the archive's own entries (same URIs, suites and
# options, Signed-By included, so apt sees no conflicting values) with the component replaced,
# into sources.list.d/pi2-vm-non-free-firmware.sources (from deb822 .sources stanzas) and/or
# pi2-vm-non-free-firmware.list (from one-line entries). Then `apt-get update` must succeed and
# raspi-firmware must have a candidate; otherwise, and on any error or interruption, the new files
# are removed and apt is left as it was.
#
# A one-line source left by an earlier version of this project's CI
# (sources.list.d/non-free-firmware.list: "deb http://deb.debian.org/debian <codename>
# non-free-firmware"), which breaks apt next to a deb822 source with Signed-By, is removed when apt
# reports an error and works without it.
#
# Nothing is changed when raspi-firmware already has a candidate, or the component is listed.
# Exit status: 0 enabled (or already available), 1 failed (apt unchanged), 2 not applicable here
# (not Debian; Ubuntu has no non-free-firmware component, it is skipped with a message).
# apt's configuration (APT_CONFIG, Dir::Etc) is honoured; OS_RELEASE names the os-release file
# (default /etc/os-release). tests/apt-component-test.sh runs it on temporary apt trees.
set -euo pipefail

component=non-free-firmware
package=raspi-firmware
os_release=${OS_RELEASE:-/etc/os-release}
say() { echo "apt-component: $*"; }
err() { echo "apt-component: $*" >&2; }

id='' codename=''
if [ -r "$os_release" ]; then
  # shellcheck disable=SC1090
  id=$(. "$os_release" && echo "${ID:-}")
  # shellcheck disable=SC1090
  codename=$(. "$os_release" && echo "${VERSION_CODENAME:-}")
fi
command -v apt-cache >/dev/null 2>&1 || { say "no apt here; nothing to do."; exit 2; }
candidate() { { apt-cache policy "$package" 2>/dev/null || true; } | awk '/Candidate:/ { print $2 }'; }
cand=$(candidate)
if [ -n "$cand" ] && [ "$cand" != "(none)" ]; then
  say "$package $cand is already available; nothing changed."
  exit 0
fi
case $id in
  debian) ;;
  ubuntu)
    say "Ubuntu has no '$component' component and its sources here offer no $package (Ubuntu's"
    say "own Pi boot firmware, linux-firmware-raspi, is not what 'make sdcard' uses); nothing changed."
    say "For 'make sdcard', put Debian's ${package}_*.deb (packages.debian.org/$package) in"
    say "build/sdcard.d/, or its bootcode.bin, start.elf and fixup.dat in /usr/lib/$package/."
    exit 2 ;;
  *)
    say "not Debian (ID=${id:-unknown}); apt sources left alone."
    exit 2 ;;
esac
if [ -z "$codename" ]; then
  err "no VERSION_CODENAME in $os_release; add '$component' to the Debian archive entry by hand."
  exit 1
fi

eval "$(apt-config shell sl Dir::Etc::sourcelist/f parts Dir::Etc::sourceparts/d)"
sl=${sl:-/etc/apt/sources.list}
parts=${parts:-/etc/apt/sources.list.d/}
parts=${parts%/}
new_sources=$parts/pi2-vm-$component.sources
new_list=$parts/pi2-vm-$component.list
legacy=$parts/$component.list

# --- undo on failure ----------------------------------------------------------------------------
tmp=$(mktemp -d)
created=()    # files this run wrote; removed unless the run succeeds
restored=()   # "from to" pairs moved aside; moved back unless the run succeeds
ok=0
cleanup() {
  local f pair
  if [ "$ok" -ne 1 ]; then
    for f in "${created[@]}"; do rm -f -- "$f"; done
    for pair in "${restored[@]}"; do mv -f -- "${pair%% *}" "${pair#* }"; done
    if [ ${#created[@]} -gt 0 ] || [ ${#restored[@]} -gt 0 ]; then
      err "apt sources put back as they were."
    fi
  fi
  rm -rf -- "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# apt-cache reads every source list, so it reports parse errors and conflicting options (no network).
apt_parses() { apt-cache policy >"$tmp/policy.log" 2>&1 && ! grep -q '^E:' "$tmp/policy.log"; }

# --- the Debian archive entries in both formats --------------------------------------------------
# An archive entry: type deb, suite = codename, component main, a URI ending in /debian (any
# mirror, or snapshot.debian.org/archive/debian/<date>). Third-party repositories for Debian use
# other components (docker: stable), so they are not taken for the archive.
uri_re='/debian/?$|snapshot[.]debian[.]org/archive/debian/[0-9TZ]+/?$'

# One-line format: prints "has" for an entry that already has the component, else the copy.
scan_list() {
  [ $# -eq 0 ] && return 0
  awk -v cn="$codename" -v comp="$component" -v ure="$uri_re" '
    { sub(/#.*/, "") }
    $1 == "deb" {
      i = 2; opts = ""
      if ($2 ~ /^\[/) {
        opts = $2
        while ($i !~ /\]$/ && i < NF) { i++; opts = opts " " $i }
        i++
      }
      uri = $i; suite = $(i + 1); has_main = 0; has_comp = 0
      for (j = i + 2; j <= NF; j++) { if ($j == "main") has_main = 1; if ($j == comp) has_comp = 1 }
      if (suite != cn || uri !~ ure) next
      if (has_comp) { print "has"; next }
      if (has_main) print "deb " (opts == "" ? "" : opts " ") uri " " suite " " comp
    }' "$@"
}

# deb822: prints "has" for a stanza that already has the component, else the stanza copied with
# Components replaced (comments dropped, continuation lines such as an inline key kept).
scan_sources() {
  [ $# -eq 0 ] && return 0
  awk -v cn="$codename" -v comp="$component" -v ure="$uri_re" '
    function words(s, w,   n, a, k) { n = split(s, a, /[ \t]+/); for (k = 1; k <= n; k++) if (a[k] == w) return 1; return 0 }
    function uri_ok(s,   n, a, k) { n = split(s, a, /[ \t]+/); for (k = 1; k <= n; k++) if (a[k] != "" && a[k] ~ ure) return 1; return 0 }
    function flush(   k) {
      if (nl > 0 && words(tolower(v["types"]), "deb") && tolower(v["enabled"]) != "no" &&
          words(v["suites"], cn) && uri_ok(v["uris"])) {
        if (words(v["components"], comp)) print "has"
        else if (words(v["components"], "main")) {
          for (k = 1; k <= nl; k++) print line[k]
          print ""
        }
      }
      nl = 0; delete v; key = ""
    }
    FNR == 1 { flush() }
    /^#/ { next }
    /^[ \t]*$/ { flush(); next }
    /^[ \t]/ { if (key != "") { v[key] = v[key] " " $0; if (key != "components") line[++nl] = $0 }; next }
    {
      key = tolower($0); sub(/:.*/, "", key)
      val = $0; sub(/^[^:]*:[ \t]*/, "", val); v[key] = val
      line[++nl] = (key == "components") ? "Components: " comp : $0
    }
    END { flush() }' "$@"
}

# --- a source left by the old CI, if it is what breaks apt ---------------------------------------
if ! apt_parses; then
  if [ -f "$legacy" ] &&
     [ "$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$legacy" | tr -s ' \t' ' ' | sed 's/ $//')" = \
       "deb http://deb.debian.org/debian $codename $component" ]; then
    mv -- "$legacy" "$tmp/legacy.list"
    restored+=("$tmp/legacy.list $legacy")
    if apt_parses; then
      restored=()
      rm -f -- "$tmp/legacy.list"
      say "removed $legacy (a one-line source from an earlier set-up that made apt fail:"
      say "'deb http://deb.debian.org/debian $codename $component')."
    fi
  fi
  if ! apt_parses; then
    err "apt already fails before any change (apt-cache policy):"
    grep -E '^(E|W):' "$tmp/policy.log" | tail -n 5 >&2 || tail -n 5 "$tmp/policy.log" >&2
    err "fix the sources in $sl / $parts first; nothing changed."
    exit 1
  fi
fi

files_list=() files_sources=()
[ -f "$sl" ] && files_list+=("$sl")
for f in "$parts"/*.list; do [ -f "$f" ] && files_list+=("$f"); done
for f in "$parts"/*.sources; do [ -f "$f" ] && files_sources+=("$f"); done

list_out=$(scan_list "${files_list[@]}")
sources_out=$(scan_sources "${files_sources[@]}")
if grep -qx has <<<"$list_out"$'\n'"$sources_out"; then
  say "'$component' is already enabled for the Debian archive; nothing changed."
  ok=1
  exit 0
fi
if [ -z "$list_out" ] && [ -z "$sources_out" ]; then
  err "no Debian archive entry (deb <mirror>/debian $codename main) found in $sl or $parts;"
  err "add '$component' to your Debian source by hand. Nothing changed."
  exit 1
fi
if [ ! -w "$parts" ]; then
  err "cannot write $parts: run as root (sudo $0). Nothing changed."
  exit 1
fi

# --- write, validate, keep or undo ---------------------------------------------------------------
header="# Debian's $component component (for $package, the Raspberry Pi boot files), added by
# pi2-vm's tests/apt-component.sh: a copy of the archive entry with only the component changed."
if [ -n "$sources_out" ]; then
  [ -e "$new_sources" ] && { mv -- "$new_sources" "$tmp/old.sources"; restored+=("$tmp/old.sources $new_sources"); }
  created+=("$new_sources")
  printf '%s\n%s\n' "$header" "$sources_out" >"$new_sources"
  chmod 644 "$new_sources"
  say "wrote $new_sources"
fi
if [ -n "$list_out" ]; then
  [ -e "$new_list" ] && { mv -- "$new_list" "$tmp/old.list"; restored+=("$tmp/old.list $new_list"); }
  created+=("$new_list")
  printf '%s\n%s\n' "$header" "$list_out" >"$new_list"
  chmod 644 "$new_list"
  say "wrote $new_list"
fi

if ! apt_parses; then
  err "apt rejects the new source (apt-cache policy):"
  grep -E '^(E|W):' "$tmp/policy.log" | tail -n 5 >&2 || true
  exit 1
fi
say "checking with apt-get update"
status=0
DEBIAN_FRONTEND=noninteractive apt-get update -q >"$tmp/update.log" 2>&1 || status=$?
if [ "$status" -ne 0 ] || grep -q '^E:' "$tmp/update.log"; then
  err "'apt-get update' failed (exit $status) with the new source; last lines:"
  tail -n 8 "$tmp/update.log" | sed 's/^/    /' >&2
  err "check the network and the existing sources ('apt-get update' alone), then run again."
  exit 1
fi
cand=$(candidate)
if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
  err "'apt-get update' worked but $package is still not available from '$component':"
  grep -iE "$component|^(W|N):" "$tmp/update.log" | tail -n 5 | sed 's/^/    /' >&2 || true
  exit 1
fi
ok=1
say "'$component' enabled; $package $cand is available."
