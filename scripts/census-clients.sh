#!/usr/bin/env bash
# Installs every client of `siprace bench --census` (run as root):
# the Debian packages, and PJSIP's pjsua2 Python binding (PyPI
# pjsua2-python) in a virtual environment of its own, /opt/siprace-pjsua2.
# The census says which clients it could not run and which package has them.
# (linphonec, from linphone-cli, is driven through its stdin: liblinphone 5.1
# ignores the configuration file's SIP port, see src/bench/clients/linphone.rs.)
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
if [ "$(id -u)" != 0 ]; then
  echo "census-clients.sh: run as root (apt-get)" >&2
  exit 2
fi
pkgs=(tshark sip-tester sipsak baresip sofia-sip-bin linphone-cli kamailio curl python3 python3-venv)
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
# Installing must not start any service (e.g. a kamailio on the host's interfaces).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
venv=/opt/siprace-pjsua2
if ! "$venv/bin/python3" -c "import pjsua2" 2>/dev/null; then
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q pjsua2-python==2.15.1.post1
fi
echo "census clients installed (pjsua2 in $venv)"
