#!/bin/sh
# Write the EMQX nodes' account files: ACCOUNTS_DIR/kiosks.json with one account per kiosk (the
# global authentication chain, for the kiosks' listener) and ACCOUNTS_DIR/service.json with the
# service's account (the service listener's own chain). emqx.conf names both as bootstrap files
# of the built-in database, in EMQX's JSON import format with plain passwords: each node hashes
# them when it imports them.
#
#   LOCKER_MQTT_PASSWORD=...  KIOSK_CREDENTIALS="kiosk-1:secret1 kiosk-2:secret2" \
#     EMQX_NODE_COOKIE=...  make-accounts.sh /opt/emqx/accounts
#
# Run by the emqx-accounts service of docker-compose.yml (profile "emqx") before the nodes start,
# and by tests/stack/test_compose_emqx.py. The accounts are checked by ../mosquitto/make-passwords.sh
# (a kiosk id is a topic level, and no kiosk id starts with 'locker-'), so that both brokers take
# the same ones; the compose job mounts both scripts as they lie here.
#
# The nodes start only once this has succeeded, so it also refuses to run without the cluster's
# Erlang cookie: compose interpolates the whole file whatever the profile, so a variable that
# compose itself required would stop the setup without EMQX too.
set -eu
set -f  # the credentials list is split on spaces below; a '*' in a password stays as written
dir=${1:?usage: make-accounts.sh ACCOUNTS_DIR}
: "${LOCKER_MQTT_PASSWORD:?set LOCKER_MQTT_PASSWORD (the service account's password)}"
: "${KIOSK_CREDENTIALS:?set KIOSK_CREDENTIALS to 'kiosk-id:password ...'}"

kiosks="$dir/kiosks.json"
service="$dir/service.json"
fail() { echo "make-accounts: $1" >&2; rm -f "$kiosks.tmp.$$" "$service.tmp.$$"; exit 2; }

# A letter first: EMQX reads an environment variable's value as HOCON, where such a word reads as
# itself (one starting with digits could read as a number).
cookie=${EMQX_NODE_COOKIE:-}
case "$cookie" in
  [A-Za-z]*) ;;
  *) fail "set EMQX_NODE_COOKIE in .env: a letter, then 31 or more letters, digits, '-' or '_'" ;;
esac
case "$cookie" in
  *[!A-Za-z0-9_-]*) fail "EMQX_NODE_COOKIE has a character other than letters, digits, '-', '_'" ;;
esac
[ "${#cookie}" -ge 32 ] || fail "EMQX_NODE_COOKIE is shorter than 32 characters"

# One {"user_id": ..., "password": ...} entry, to standard output: a JSON string escapes '\' and
# '"', and a control character is refused rather than escaped.
entry() {
  case "$2" in *[[:cntrl:]]*) fail "the password of '$1' has a control character" ;; esac
  escaped=$(printf '%s' "$2" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
  printf '  {"user_id": "%s", "password": "%s", "is_superuser": false}' "$1" "$escaped"
}

# Mosquitto's script with a password tool that writes nothing, into a directory thrown away: it
# only checks the accounts (its messages say what is wrong).
check=$(mktemp -d)
if ! MOSQUITTO_PASSWD=true sh "$(dirname "$0")/../mosquitto/make-passwords.sh" "$check" >/dev/null
then
  rm -rf "$check"
  fail "the accounts of .env are refused (above)"
fi
rm -rf "$check"

umask 027  # the files are 640: for the nodes' user (chown below), nobody else
{ printf '[\n'; entry locker-service "$LOCKER_MQTT_PASSWORD"; printf '\n]\n'; } > "$service.tmp.$$"
printf '[' > "$kiosks.tmp.$$"
count=0
seen=
for item in $KIOSK_CREDENTIALS; do
  kiosk=${item%%:*}
  # Mosquitto keeps the last password of a kiosk given twice, EMQX the first: neither, here.
  case " $seen " in *" $kiosk "*) fail "kiosk id '$kiosk' is given twice" ;; esac
  seen="$seen $kiosk"
  [ "$count" -eq 0 ] || printf ',' >> "$kiosks.tmp.$$"
  printf '\n' >> "$kiosks.tmp.$$"
  entry "$kiosk" "${item#*:}" >> "$kiosks.tmp.$$"
  count=$((count + 1))
done
printf '\n]\n' >> "$kiosks.tmp.$$"
# The nodes run as the image's emqx user and must read the files.
owner=${ACCOUNT_FILE_OWNER:-$(id -u):$(id -g)}
chown "$owner" "$kiosks.tmp.$$" "$service.tmp.$$" 2>/dev/null || true
mv "$service.tmp.$$" "$service"
mv "$kiosks.tmp.$$" "$kiosks"
echo "make-accounts: wrote $service (the service's account) and $kiosks ($count kiosk accounts)"
