#!/usr/bin/env bash
# Installs the real parts the tests need (Debian packages), or fails naming them.
# Usage: tools/deps.sh PACKAGE:COMMAND ...   e.g. tools/deps.sh mosquitto:/usr/sbin/mosquitto
set -euo pipefail
missing=()
for spec in "$@"; do
  pkg=${spec%%:*}; cmd=${spec#*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "$cmd" ]; then missing+=("$pkg"); fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "make test needs these Debian packages, which are not installed: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for spec in "$@"; do
  pkg=${spec%%:*}; cmd=${spec#*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "$cmd" ]; then
    echo "installed $pkg but $cmd is still missing" >&2; exit 1
  fi
done
