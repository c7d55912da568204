#!/bin/sh
# Write Mosquitto's password files: AUTH_DIR/passwd-kiosks with one account per kiosk (for the
# kiosks' listener) and AUTH_DIR/passwd-service with the service's account (for its own).
#
#   LOCKER_MQTT_PASSWORD=...  KIOSK_CREDENTIALS="kiosk-1:secret1 kiosk-2:secret2" \
#     make-passwords.sh /mosquitto/auth
#
# Run by the mosquitto-passwords service of docker-compose.yml before the broker starts, and by
# tests/stack/test_mosquitto_acl.py. Passwords are stored hashed (PBKDF2-SHA512) by
# mosquitto_passwd. A kiosk id is a topic level, so only letters, digits, '-' and '_' are taken;
# it is also the kiosk's client id, so ids starting with 'locker-' (the service's and the
# bridges' client ids) are refused.
set -eu
# No pathname expansion: the credentials list is split on spaces below, and a password with
# * or ? in it must stay as written even if it happens to match a file name.
set -f
dir=${1:?usage: make-passwords.sh AUTH_DIR}
: "${LOCKER_MQTT_PASSWORD:?set LOCKER_MQTT_PASSWORD (the service account's password)}"
: "${KIOSK_CREDENTIALS:?set KIOSK_CREDENTIALS to 'kiosk-id:password ...'}"
MOSQUITTO_PASSWD=${MOSQUITTO_PASSWD:-mosquitto_passwd}

kiosks="$dir/passwd-kiosks"
service="$dir/passwd-service"
tmp_kiosks="$kiosks.tmp.$$"
tmp_service="$service.tmp.$$"
fail() { echo "make-passwords: $1" >&2; rm -f "$tmp_kiosks" "$tmp_service"; exit 2; }
rm -f "$tmp_kiosks" "$tmp_service"
touch "$tmp_kiosks" "$tmp_service"
chmod 600 "$tmp_kiosks" "$tmp_service"
"$MOSQUITTO_PASSWD" -b "$tmp_service" locker-service "$LOCKER_MQTT_PASSWORD"
count=0
for entry in $KIOSK_CREDENTIALS; do
  kiosk=${entry%%:*}
  password=${entry#*:}
  case "$kiosk" in
    ""|*[!A-Za-z0-9_-]*) fail "bad kiosk id in '$kiosk'" ;;
    locker-*) fail "kiosk id '$kiosk': ids starting with 'locker-' are the service's and bridges' client ids" ;;
  esac
  if [ "$kiosk" = "$entry" ] || [ -z "$password" ]; then
    fail "kiosk '$kiosk' has no password (write kiosk-id:password)"
  fi
  "$MOSQUITTO_PASSWD" -b "$tmp_kiosks" "$kiosk" "$password"
  count=$((count + 1))
done
# The broker runs as user mosquitto and must read the files; nobody else may.
for f in "$tmp_kiosks" "$tmp_service"; do
  chown "${PASSWORD_FILE_OWNER:-$(id -u):$(id -g)}" "$f" 2>/dev/null || true
  chmod 640 "$f"
done
mv "$tmp_service" "$service"
mv "$tmp_kiosks" "$kiosks"
echo "make-passwords: wrote $service with the service account and $kiosks with $count kiosk account(s)"
