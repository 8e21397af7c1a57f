#!/usr/bin/env bash
# The README's set-up command: system packages the tests need (OpenSSH for the remote-board
# runner's loopback tests, qemu-user for the board bundle on an emulated x86 CPU), then vitedge
# with its dev and executorch extras (the tests cover the ExecuTorch export, runner and board
# bundle too).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {  # apt-get install "$@", or say what to install where there is no apt
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
  else
    echo "warning: install $* for the tests that need them" >&2
  fi
}
if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null 2>&1; then
  apt_install openssh-server openssh-client
fi
if ! command -v qemu-x86_64 >/dev/null 2>&1 && ! command -v qemu-x86_64-static >/dev/null 2>&1; then
  apt_install qemu-user || echo "warning: qemu-user did not install; the emulated-CPU test will skip" >&2
fi
python -m pip install -q -e '.[dev,executorch]'
