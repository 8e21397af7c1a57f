#!/usr/bin/env bash
# The README's set-up command: system packages the tests need (OpenSSH for the remote-board
# runner's loopback tests), then vitedge with its dev and executorch extras (the tests cover
# the ExecuTorch export, runner and board bundle too).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssh-server openssh-client >/dev/null
  else
    echo "warning: install OpenSSH (sshd, ssh) for the remote-board tests" >&2
  fi
fi
python -m pip install -q -e '.[dev,executorch]'
