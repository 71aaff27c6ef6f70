# Shared by scripts/demo and scripts/test: a .venv with supportd installed, on a fresh
# Debian machine too (python3-venv is installed when missing and we may use apt).
PYTHON=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_install() {
    # Debian's maintainer scripts would start system-wide services (Dovecot on port 143);
    # a policy-rc.d that exits 101 stops that. The tests start their own private Dovecot.
    local policy=/usr/sbin/policy-rc.d saved=""
    if [ -e "$policy" ]; then saved=$(mktemp); $SUDO cp -p "$policy" "$saved"; fi
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
    if [ -n "$saved" ]; then $SUDO mv "$saved" "$policy"; else $SUDO rm -f "$policy"; fi
}

ensure_venv() {  # ensure_venv EXTRAS
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        echo "== installing python3-venv"
        apt_install python3-venv
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "== creating .venv"
        "$PYTHON" -m venv .venv
    fi
    echo "== installing supportd${1:+ with $1}"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${1:+[$1]}"
}
