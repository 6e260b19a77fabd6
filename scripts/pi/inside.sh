#!/usr/bin/env bash
# Runs INSIDE an emulated Raspberry Pi OS root filesystem (scripts/pi_check.sh chroots into it).
#   inside.sh install ARCH OUTDIR FIELDLIST   the README's install ("Raspberry Pi"), then the cpuinfo guard
#   inside.sh run ARCH OUTDIR FIELDLIST       classify the fields, model-input digests, the daemon on 5 fields
set -euo pipefail
phase="$1" arch="$2" out="$3" list="$4"
cd /opt/edge-screen
mapfile -t fields < "$list"
py=/opt/venv/bin/python

if [ "$phase" = install ]; then
  t0=$(date +%s)
  # The venv is kept between runs while the declared dependencies are unchanged (a warm CI run then only
  # reinstalls the project itself); any change to them starts from an empty venv.
  stamp=$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)
  if [ "$(cat /opt/venv/.stamp 2>/dev/null)" != "$stamp" ] || [ "${EDGE_PI_FRESH:-0}" = 1 ]; then
    rm -rf /opt/venv
    case "$arch" in
      arm64) python3 -m venv /opt/venv ;;
      # Pi OS 32-bit: numpy and OpenCV from apt (PyPI has no armv7l wheels), seen through the venv.
      armhf) python3 -m venv --system-site-packages /opt/venv ;;
    esac
  fi
  if [ "$arch" = armhf ] && ! dpkg -s libturbojpeg0 >/dev/null 2>&1; then
    # The README's apt line for 32-bit (the root filesystem has numpy and OpenCV already).
    apt-get update -qq && apt-get install -y -qq libturbojpeg0 >/dev/null
  fi
  case "$arch" in
    arm64) /opt/venv/bin/pip install -q -e . ;;
    # No compiler in this root filesystem: an sdist that needs one fails here, as on a Pi without one.
    armhf) /opt/venv/bin/pip install -q --prefer-binary -e '.[tflite-runtime]' ;;
  esac
  echo "$stamp" > /opt/venv/.stamp
  echo "install_s $(( $(date +%s) - t0 ))" > "$out/install.txt"
  /opt/venv/bin/pip list --format=freeze > "$out/pip-freeze.txt" 2>/dev/null || true
  uname -m > "$out/machine.txt"
  "$py" -c "import edge.imaging.decode as d; print('jpeg_decoder', d.jpeg_decoder())" >> "$out/install.txt"
  # qemu-user shows the x86 host's /proc/cpuinfo: the runtime would crash (SIGSEGV) reading it. The product
  # must refuse with its one-line reason and exit 3 instead (edge/inference/backends/cpuinfo.py).
  rc=0; /opt/venv/bin/edge-screen classify --no-db "${fields[0]}" > "$out/guard.out" 2> "$out/guard.err" || rc=$?
  echo "guard_exit $rc $(tail -n 1 "$out/guard.err" | cut -c1-160)" >> "$out/install.txt"
  exit 0
fi

t0=$(date +%s)
"$py" scripts/model_inputs.py digest --out "$out/digests.json" "${fields[@]}"
/opt/venv/bin/edge-screen classify --json --no-db "${fields[@]}" > "$out/classify.jsonl" 2> "$out/classify.log"
echo "classify_s $(( $(date +%s) - t0 )) (${#fields[@]} fields, emulated)" >> "$out/install.txt"
if [ "$arch" = arm64 ] && [ "${EDGE_PI_BUILTIN:-16}" -gt 0 ]; then
  # The same inputs through TFLite's builtin kernels (model.kernels = "builtin"): what the kernels change.
  printf '[model]\nkernels = "builtin"\nnum_threads = 1\n' > /opt/builtin.toml
  /opt/venv/bin/edge-screen classify -c /opt/builtin.toml --json --no-db "${fields[@]:0:${EDGE_PI_BUILTIN:-16}}" \
    > "$out/classify-builtin.jsonl" 2>> "$out/classify.log"
fi

# The daemon on 5 fields: rows in SQLite, `status`, SIGTERM -> exit 0.
d=/opt/daemon-check
rm -rf "$d" && mkdir -p "$d/inbox"
cat > "$d/edge-screen.toml" <<TOML
[daemon]
inbox = "$d/inbox"
device_id = "pi-emulated-$arch"
[database]
url = "sqlite:///$d/db.sqlite"
[model]
num_threads = 1
TOML
/opt/venv/bin/edge-screen run -c "$d/edge-screen.toml" 2> "$out/daemon.log" &
pid=$!
for f in "${fields[@]:0:5}"; do cp "$f" "$d/inbox/"; done
rows() { "$py" -c "import sqlite3; c = sqlite3.connect('file:$d/db.sqlite?mode=ro', uri=True); print(c.execute('select count(*) from images').fetchone()[0])" 2>/dev/null || echo 0; }
deadline=$(( $(date +%s) + 600 ))
while [ "$(rows)" -lt 5 ]; do
  kill -0 $pid 2>/dev/null || { echo "the daemon exited before recording 5 rows"; tail -n 5 "$out/daemon.log"; exit 1; }
  [ "$(date +%s)" -lt $deadline ] || { echo "the daemon recorded fewer than 5 rows in 600 s"; kill -TERM $pid; exit 1; }
  sleep 1  # polling the database for the rows (the condition), not a fixed wait
done
/opt/venv/bin/edge-screen status -c "$d/edge-screen.toml" --json > "$out/status.json"
kill -TERM $pid
rc=0; wait $pid || rc=$?
echo "daemon_rows $(rows) status_json $(stat -c %s "$out/status.json") bytes sigterm_exit $rc" >> "$out/install.txt"
[ $rc = 0 ]
