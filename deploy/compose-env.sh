#!/usr/bin/env sh
# The secrets docker-compose.yml needs, made once: a random value for every variable it
# requires (`${NAME:?...}`) that the env file does not set yet, appended to var/compose.env
# (or the file given), readable by its owner only. Values already there are kept, so
# running it again after an upgrade only adds what is new.
#   deploy/compose-env.sh [FILE]
#   docker compose --env-file var/compose.env up --build
# The values are hex (URL-safe: most go into AMQP and PostgreSQL URLs) of 32 random bytes.
# var/ is git-ignored; never commit the file.
set -eu
cd "$(dirname "$0")/.."
file="${1:-var/compose.env}"
umask 077
mkdir -p "$(dirname "$file")"
touch "$file"
chmod 600 "$file"
for name in $(grep -o '\${[A-Za-z_][A-Za-z0-9_]*:?' docker-compose.yml | sed 's/^\${//; s/:?$//' | sort -u); do
  if ! grep -q "^${name}=" "$file"; then
    printf '%s=%s\n' "$name" "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >> "$file"
    echo "compose-env: $name set in $file" >&2
  fi
done
