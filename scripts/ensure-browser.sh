#!/usr/bin/env bash
# Make sure a headless browser is installed for the test suite's UI check: Debian's chromium.
set -euo pipefail
if command -v chromium >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "The test suite renders a Prefect UI page in Debian's chromium, and this machine has no apt-get:" >&2
  echo "install Chromium so that the command 'chromium' runs it." >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "Installing chromium (headless browser for the UI test) with apt-get ..."
$sudo apt-get update -qq
$sudo apt-get install -y -qq chromium >/dev/null
