#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo run for real: Prometheus, hey, and for the
# network-namespace suite (pods with iptables capture) iproute2, iptables, util-linux's setpriv and
# tcpdump (what crosses a pod's interface: mesh mTLS, never plaintext);
# chromium and its driver for the dashboard's browser tests; bash, zsh and fish for the completion tests.
set -euo pipefail
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v hey >/dev/null 2>&1 || missing+=(hey)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v zsh >/dev/null 2>&1 || missing+=(zsh)
command -v fish >/dev/null 2>&1 || missing+=(fish)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "Installing Debian packages: ${missing[*]} (apt-get; 1-2 minutes)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
