#!/usr/bin/env bash
# Emulated Raspberry Pi check: Debian bookworm (the Pi OS base) root filesystems for arm64 (Pi OS 64-bit)
# and armhf (Pi OS 32-bit) built with mmdebstrap from this machine's apt sources, run under qemu-user
# through binfmt_misc. In each, the project is installed the README's way ("Raspberry Pi" section), then
# `edge-screen classify` answers for real fields, scripts/model_inputs.py digests their model inputs and
# the daemon runs on 5 of them; answers and digests are compared with this machine's (x86-64).
#
#   scripts/pi_check.sh [--arch arm64|armhf|all] [--fields N] [--cache DIR] [--keep]
# Environment: EDGE_PI_NO_BUILD=1 skips (with a message) an architecture whose root filesystem is not cached;
# EDGE_PI_ROOTFS_ONLY=1 only builds them; EDGE_PI_FRESH=1 starts from an empty venv; EDGE_PI_BUILTIN=N
# fields also go through the builtin kernels on arm64 (16); EDGE_PI_HOST_PYTHON: the x86 python.
#
# Exit 0: every requested architecture agreed, or emulation is impossible here (one line "pi_check: SKIP:
# <why>", so CI on a machine without binfmt_misc or root still passes). Exit 1: a check failed.
# The root filesystems (and pip's wheel cache) are kept under the cache dir (default
# ~/.cache/edge-screen-pi); a warm run keeps the venv while setup.cfg is unchanged and reinstalls the
# project into it.
set -euo pipefail

ARCHES="arm64 armhf"
FIELDS=40
CACHE="${EDGE_PI_CACHE:-$HOME/.cache/edge-screen-pi}"
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCHES="$2"; [ "$ARCHES" = all ] && ARCHES="arm64 armhf"; shift 2 ;;
    --fields) FIELDS="$2"; shift 2 ;;
    --cache) CACHE="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "pi_check: unknown argument $1" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "$0")/.." && pwd)"
HOST_PY="${EDGE_PI_HOST_PYTHON:-}"
if [ -z "$HOST_PY" ]; then
  for p in "$REPO/.venv/bin/python" "$(command -v python3)"; do
    if [ -x "$p" ] && "$p" -c "import edge.inference.classifier" 2>/dev/null; then HOST_PY="$p"; break; fi
  done
fi
log() { echo "pi_check: $*"; }
skip() { echo "pi_check: SKIP: $*"; exit 0; }

# Packages of each root filesystem. armhf: Pi OS 32-bit has no compiler by default and PyPI has no armv7l
# wheels of numpy, OpenCV or simplejpeg, so those come from Debian (README "Raspberry Pi").
PKGS_arm64="python3,python3-venv,ca-certificates"
PKGS_armhf="python3,python3-venv,ca-certificates,python3-numpy,python3-opencv"
QEMU_arm64=aarch64
QEMU_armhf=arm
# The emulated core: a Pi 4's Cortex-A72 (aarch64); for 32-bit, qemu-arm's closest ARMv7 core with NEON and
# VFPv4. qemu's default "max" core advertises instruction-set extensions no Pi has (i8mm, SVE), and with
# them XNNPACK's kernels returned garbage under qemu 7.2 (every field "not a blood smear").
CPU_arm64=cortex-a72
CPU_armhf=cortex-a15

# ------------------------------------------------------------------ can this machine emulate at all?
preflight() {
  [ "$(uname -m)" = x86_64 ] || skip "host is $(uname -m), the comparison is against x86-64"
  [ "$(id -u)" = 0 ] || skip "needs root (mmdebstrap --mode=root, chroot, bind mounts); running as uid $(id -u)"
  for t in mmdebstrap arch-test chroot mount; do
    command -v "$t" >/dev/null || skip "$t is not installed (apt-get install mmdebstrap qemu-user-static binfmt-support arch-test)"
  done
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
      || skip "binfmt_misc is not mounted and cannot be mounted here (no CAP_SYS_ADMIN, or the kernel lacks it)"
  fi
  [ "$(cat /proc/sys/fs/binfmt_misc/status)" = enabled ] || skip "binfmt_misc is disabled in this kernel"
  [ -n "$HOST_PY" ] && [ -x "$HOST_PY" ] || skip "no host python with edge-screen importable (set EDGE_PI_HOST_PYTHON)"
  for a in $ARCHES; do
    local q="QEMU_$a"
    if [ ! -e "/proc/sys/fs/binfmt_misc/qemu-${!q}" ] && command -v update-binfmts >/dev/null; then
      update-binfmts --enable "qemu-${!q}" >/dev/null 2>&1 || true
    fi
    arch-test "$a" >/dev/null 2>&1 \
      || skip "cannot run $a binaries: $(arch-test "$a" 2>&1 | tail -n 1) (qemu-user-static registered with binfmt_misc?)"
  done
}

# ------------------------------------------------------------------ root filesystems (cached)
rootfs_dir() {  # the cache directory of ARCH's root filesystem (its name changes with the package list)
  local pk="PKGS_$1"
  echo "$CACHE/rootfs-$1-$(printf '%s %s v1' "$1" "${!pk}" | sha256sum | cut -c1-12)"
}

rootfs() {  # rootfs ARCH -> prints the directory, built once
  local arch="$1" pk="PKGS_$1"
  local dir; dir="$(rootfs_dir "$arch")"
  if [ ! -e "$dir/.complete" ]; then
    log "building the bookworm $arch root filesystem in $dir (mmdebstrap, once; log $CACHE/mmdebstrap-$arch.log)" >&2
    rm -rf "$dir.tmp"
    # The machine's own apt sources: whatever mirror (or snapshot) this host is configured for.
    local sources=/etc/apt/sources.list.d/debian.sources
    [ -e "$sources" ] || sources=/etc/apt/sources.list
    local try ok=0
    for try in 1 2 3; do  # a mirror caught mid-sync ("File has unexpected size") is fine a minute later
      # After a failure, no-cache: a proxy may hold an index older than the Release file that lists it.
      local nc=() src="$sources"; [ $try -gt 1 ] && nc=(--aptopt='Acquire::http::No-Cache "true"')
      if [ $try = 3 ] && grep -q 'unexpected size' "$CACHE/mmdebstrap-$arch.log" && [ "${sources##*.}" = sources ]; then
        # Last resort for an emulation check (not a device): without the security suite, whose index
        # this mirror has served mid-sync (it does not change what edge-screen installs from PyPI).
        src="$CACHE/no-security.sources"
        awk -v RS= -v ORS='\n\n' '!/-security/' "$sources" > "$src"
        log "$arch: bookworm-security's index is inconsistent on this mirror; building without it" >&2
      fi
      if mmdebstrap --mode=root --variant=apt --architectures="$arch" --include="${!pk}" \
          "${nc[@]}" bookworm "$dir.tmp" "$src" >"$CACHE/mmdebstrap-$arch.log" 2>&1; then ok=1; break; fi
      rm -rf "$dir.tmp"; sleep $((10 * try))
    done
    if [ $ok = 0 ]; then tail -n 20 "$CACHE/mmdebstrap-$arch.log" >&2; return 1; fi
    touch "$dir.tmp/.complete"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}

preflight
mkdir -p "$CACHE" || skip "cannot create the cache directory $CACHE"
if [ "${EDGE_PI_ROOTFS_ONLY:-0}" = 1 ]; then for a in $ARCHES; do rootfs "$a"; done; exit 0; fi

# ------------------------------------------------------------------ one architecture
MOUNTED=()
cleanup() { local m; for m in "${MOUNTED[@]}"; do umount -l "$m" 2>/dev/null || true; done; MOUNTED=(); }
trap cleanup EXIT
bind() { [ -d "$1" ] && mkdir -p "$2" || touch "$2"; mount --bind "$1" "$2"; MOUNTED=("$2" "${MOUNTED[@]}"); }

inside() {  # inside ROOT PHASE ARCH -> the phase's exit code
  local cpu="CPU_$3"
  chroot "$1" /usr/bin/env -i QEMU_CPU="${!cpu}" EDGE_PI_BUILTIN="${EDGE_PI_BUILTIN:-16}" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=120 EDGE_PI_FRESH="${EDGE_PI_FRESH:-0}" \
    bash /opt/edge-screen/scripts/pi/inside.sh "$2" "$3" /opt/out /opt/fields.txt
}

START=$(date +%s)
WORK="$(mktemp -d /tmp/pi-check.XXXXXX)"
PYTHONPATH="$REPO" "$HOST_PY" "$REPO/scripts/model_inputs.py" fields --fields "$FIELDS" > "$WORK/fields-host.txt"
nf=$(wc -l < "$WORK/fields-host.txt")
[ "$nf" -ge 1 ] || skip "no real fields under $REPO/../shared/datasets"
SHARED_DS="$(cd "$REPO/.." && pwd)/shared/datasets"

# x86-64 reference: the same commands on this machine.
mkdir -p "$WORK/x86"
mapfile -t HOST_FIELDS < "$WORK/fields-host.txt"
log "x86-64: classifying $nf fields"
(cd "$REPO" && PYTHONPATH="$REPO" "$HOST_PY" -m edge classify --json --no-db "${HOST_FIELDS[@]}" \
  > "$WORK/x86/classify.jsonl" 2>"$WORK/x86/classify.log")
PYTHONPATH="$REPO" "$HOST_PY" "$REPO/scripts/model_inputs.py" digest --out "$WORK/x86/digests.json" "${HOST_FIELDS[@]}"
printf '[model]\nkernels = "builtin"\nnum_threads = 1\n' > "$WORK/builtin.toml"
(cd "$REPO" && PYTHONPATH="$REPO" "$HOST_PY" -m edge classify -c "$WORK/builtin.toml" --json --no-db "${HOST_FIELDS[@]}" \
  > "$WORK/x86/classify-builtin.jsonl" 2>>"$WORK/x86/classify.log")

check_arch() {  # check_arch ARCH: everything for one architecture; its lines go to stdout, status = result
  local arch="$1" t0 root rc
  t0=$(date +%s)
  MOUNTED=()
  trap cleanup EXIT
  if ! root="$(rootfs "$arch")"; then
    # Network or mirror trouble is not a finding about edge-screen: say so and go on.
    log "$arch: SKIP: the root filesystem could not be built (mirror unreachable?): see $CACHE/mmdebstrap-$arch.log"
    return 0
  fi
  # A fresh copy of the working tree (tracked and untracked, not ignored files): what a Pi owner clones.
  rm -rf "$root/opt/edge-screen" "$root/opt/shared" "$root/opt/out"
  mkdir -p "$root/opt/edge-screen" "$root/opt/out"
  (cd "$REPO" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$root/opt/edge-screen"
  # The fields, at the same paths below shared/datasets, so that the digests' names match.
  sed "s#^$SHARED_DS#/opt/shared/datasets#" "$WORK/fields-host.txt" > "$root/opt/fields.txt"
  while read -r f; do
    dst="$root/opt/shared/datasets/${f#"$SHARED_DS"/}"; mkdir -p "$(dirname "$dst")"; cp "$f" "$dst"
  done < "$WORK/fields-host.txt"
  # This machine reaches PyPI through its own CA bundle (a proxy's CA may be in it, not in Debian's).
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/host-ca-bundle.crt"
  cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
  mkdir -p "$CACHE/pip-$arch"
  mount -t proc proc "$root/proc"; MOUNTED=("$root/proc" "${MOUNTED[@]}")
  bind /dev "$root/dev"
  bind /sys "$root/sys"
  bind "$CACHE/pip-$arch" "$root/root/.cache/pip"
  log "$arch: installing the README's way under emulation (log $WORK/$arch.log)"
  rc=0; inside "$root" install "$arch" > "$WORK/$arch.log" 2>&1 || rc=$?
  if [ $rc = 0 ]; then
    # qemu-user shows the host's x86 /proc/cpuinfo; a Pi 4's own listing goes in its place for the run.
    bind "$REPO/scripts/pi/cpuinfo-$arch" "$root/proc/cpuinfo"
    log "$arch: classifying $nf fields and running the daemon on 5 (emulated Pi 4 /proc/cpuinfo)"
    inside "$root" run "$arch" >> "$WORK/$arch.log" 2>&1 || rc=$?
  fi
  cleanup
  mkdir -p "$WORK/$arch"; cp -r "$root/opt/out/." "$WORK/$arch/"
  sed "s/^/pi_check: $arch: /" "$WORK/$arch/install.txt" 2>/dev/null || true
  if [ $rc != 0 ]; then
    log "$arch: FAIL inside the emulated system (exit $rc):"; tail -n 25 "$WORK/$arch.log" | sed 's/^/    /'
    return 1
  fi
  local bad=0
  grep -q '^guard_exit 3 ' "$WORK/$arch/install.txt" \
    || { log "$arch: FAIL: with the host's /proc/cpuinfo the model load did not end in exit 3"; bad=1; }
  if [ "$arch" = armhf ]; then
    # tflite_runtime runs TFLite's builtin kernels: compared with x86's builtin, verdicts must agree.
    "$HOST_PY" "$REPO/scripts/pi_compare.py" "$WORK/x86" "$WORK/$arch" --label "armhf tflite_runtime" \
      --x86-answers classify-builtin.jsonl --verdicts-only || bad=1
  else
    "$HOST_PY" "$REPO/scripts/pi_compare.py" "$WORK/x86" "$WORK/$arch" --label "$arch xnnpack" || bad=1
    if [ -s "$WORK/$arch/classify-builtin.jsonl" ]; then
      "$HOST_PY" "$REPO/scripts/pi_compare.py" "$WORK/x86" "$WORK/$arch" --label "$arch builtin" \
        --x86-answers classify-builtin.jsonl --arm-answers classify-builtin.jsonl --verdicts-only || bad=1
    fi
  fi
  log "$arch: done in $(( $(date +%s) - t0 )) s"
  return $bad
}

# The architectures run side by side (qemu-user runs each emulated process on one host core).
fail=0
pids=()
for arch in $ARCHES; do
  if [ "${EDGE_PI_NO_BUILD:-0}" = 1 ] && [ ! -e "$(rootfs_dir "$arch")/.complete" ]; then
    # CI: building a root filesystem under emulation takes 10-50 min; CI uses the cached one or skips.
    log "$arch: SKIP: no cached root filesystem in $CACHE (EDGE_PI_NO_BUILD=1); build it once with"
    log "    EDGE_PI_ROOTFS_ONLY=1 scripts/pi_check.sh --arch $arch"
    continue
  fi
  ( check_arch "$arch" > "$WORK/$arch.report" 2>&1 ) &
  pids+=("$!:$arch")
done
for p in "${pids[@]}"; do
  wait "${p%%:*}" || fail=1
  cat "$WORK/${p#*:}.report"
done
if [ $KEEP = 1 ]; then log "outputs kept in $WORK"; else rm -rf "$WORK"; fi
if [ $fail = 0 ]; then log "PASS ($ARCHES) in $(( $(date +%s) - START )) s"; else log "FAIL"; fi
exit $fail
