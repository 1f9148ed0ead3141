#!/usr/bin/env bash
# The system packages the test suite needs, installed on Debian (or Ubuntu) when missing: the full
# Fashion-MNIST (the scale tests), Chromium (TensorBoard's screenshot) and its chromedriver
# (digits.serve's page, driven by Selenium; nothing is downloaded at run time). As root it runs
# apt-get itself; otherwise sudo without a password prompt; else it stops with one line naming
# the command that installs them (exit 2).
set -euo pipefail

need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the tests need Debian's packages ${need[*]} (or their equivalents), and this machine has no apt-get" >&2
  exit 2
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "error: the tests need Debian's packages ${need[*]}: run  sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 2
fi
echo "installing Debian's ${need[*]} for the tests" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
