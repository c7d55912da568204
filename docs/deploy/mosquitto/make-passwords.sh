#!/bin/sh
# Write Mosquitto's password file: one account for the service and one per kiosk.
#
#   LOCKER_MQTT_PASSWORD=...  KIOSK_CREDENTIALS="kiosk-1:secret1 kiosk-2:secret2" \
#     make-passwords.sh /mosquitto/auth/passwd
#
# Run by the mosquitto-passwords service of docker-compose.yml before the broker starts, and by
# tests/stack/test_mosquitto_acl.py. Passwords are stored hashed (PBKDF2-SHA512) by
# mosquitto_passwd. A kiosk id is a topic level, so only letters, digits, '-' and '_' are taken.
set -eu
# No pathname expansion: the credentials list is split on spaces below, and a password with
# * or ? in it must stay as written even if it happens to match a file name.
set -f
out=${1:?usage: make-passwords.sh PASSWORD_FILE}
: "${LOCKER_MQTT_PASSWORD:?set LOCKER_MQTT_PASSWORD (the service account's password)}"
: "${KIOSK_CREDENTIALS:?set KIOSK_CREDENTIALS to 'kiosk-id:password ...'}"
MOSQUITTO_PASSWD=${MOSQUITTO_PASSWD:-mosquitto_passwd}

tmp="$out.tmp.$$"
rm -f "$tmp"
touch "$tmp"
chmod 600 "$tmp"
"$MOSQUITTO_PASSWD" -b "$tmp" locker-service "$LOCKER_MQTT_PASSWORD"
count=0
for entry in $KIOSK_CREDENTIALS; do
  kiosk=${entry%%:*}
  password=${entry#*:}
  case "$kiosk" in
    ""|*[!A-Za-z0-9_-]*) echo "make-passwords: bad kiosk id in '$kiosk'" >&2; rm -f "$tmp"; exit 2 ;;
  esac
  if [ "$kiosk" = "$entry" ] || [ -z "$password" ]; then
    echo "make-passwords: kiosk '$kiosk' has no password (write kiosk-id:password)" >&2
    rm -f "$tmp"; exit 2
  fi
  if [ "$kiosk" = "locker-service" ]; then
    echo "make-passwords: 'locker-service' is the service's account, not a kiosk id" >&2
    rm -f "$tmp"; exit 2
  fi
  "$MOSQUITTO_PASSWD" -b "$tmp" "$kiosk" "$password"
  count=$((count + 1))
done
# The broker runs as user mosquitto and must read the file; nobody else may.
chown "${PASSWORD_FILE_OWNER:-$(id -u):$(id -g)}" "$tmp" 2>/dev/null || true
chmod 640 "$tmp"
mv "$tmp" "$out"
echo "make-passwords: wrote $out with the service account and $count kiosk account(s)"
