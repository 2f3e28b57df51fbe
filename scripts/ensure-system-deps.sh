#!/usr/bin/env bash
# Installs what the test suite needs from Debian's packages when it is missing, and builds the
# real-VM rig when ../shared/vm is there. Services are NOT started here: every test starts its own
# qemu-ga, redis-server or VM on temporary sockets and ports, and stops it afterwards.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vm_dir=${QGA_SHARED_DIR:-$here/../shared}/vm

need=()
[ -x /usr/sbin/qemu-ga ] || need+=(qemu-guest-agent)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# promtool checks contrib/prometheus-alerts.yaml (Debian's prometheus package ships /usr/bin/promtool)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# systemd-analyze verify checks contrib/qga-gateway.service (test/cli/packaging.test.ts); openssl makes the TLS test's certificates
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# the fleet page's browser test (test/ui) drives Debian's chromium through playwright-core
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ -x "$vm_dir/start.sh" ] && ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  need+=(qemu-system-x86)
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-system-deps: missing ${need[*]}; install them (apt-get install -y ${need[*]}) or run as root" >&2
    exit 1
  fi
  echo "ensure-system-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts redis-server as a service when it installs it; the tests use their own instances.

if [ -x "$vm_dir/build.sh" ]; then
  echo "ensure-system-deps: building the VM rig ($vm_dir)" >&2
  QGA_VM_ACCEL=${QGA_VM_ACCEL:-tcg} "$vm_dir/build.sh" >/dev/null 2>"${TMPDIR:-/tmp}/qga-vm-build.log" || {
    echo "ensure-system-deps: VM rig build failed:" >&2; tail -20 "${TMPDIR:-/tmp}/qga-vm-build.log" >&2; exit 1; }
else
  echo "ensure-system-deps: no VM rig at $vm_dir: real-VM tests will say they skipped" >&2
fi
