#!/usr/bin/env bash
# Make sure the default dataset (Debian package dataset-fashion-mnist) is installed.
set -euo pipefail
package=dataset-fashion-mnist
if dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "The default dataset comes from the Debian package $package, and this machine has no apt-get." >&2
  echo "Point data.source in params.yaml at your own IDX files, .npz arrays or image folder instead." >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "Installing $package (Fashion-MNIST) with apt-get ..."
$sudo apt-get update -qq
$sudo apt-get install -y -qq "$package" >/dev/null
