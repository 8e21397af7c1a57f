#!/usr/bin/env bash
# The README's set-up command: system packages the tests need (OpenSSH for the remote-board
# runner's loopback tests, qemu-user for the board bundle on an emulated x86 CPU), then vitedge
# with its dev and executorch extras (the tests cover the ExecuTorch export, runner and board
# bundle too).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null 2>&1; then
  missing+=(openssh-server openssh-client)
fi
if ! command -v qemu-x86_64 >/dev/null 2>&1 && ! command -v qemu-x86_64-static >/dev/null 2>&1; then
  missing+=(qemu-user)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "warning: install ${missing[*]} for the remote-board and emulated-CPU tests" >&2
  fi
fi
python -m pip install -q -e '.[dev,executorch]'
