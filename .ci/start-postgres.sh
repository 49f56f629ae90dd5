# Sourced by .ci/run: start a throwaway PostgreSQL server on 127.0.0.1 and export its URL for the
# tests (GPTEXP_TEST_POSTGRES_URL). The password is random and lives only in this environment.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pg_bin" ]; then
  echo "start-postgres: PostgreSQL is not installed" >&2
  return 1
fi
pg_port=${GPTEXP_TEST_PG_PORT:-$(python -c "import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])")}
pg_dir=$(mktemp -d /tmp/gptexp-pg.XXXXXX)
chown postgres "$pg_dir"
pg_password=$(python -c "import secrets; print(secrets.token_hex(12))")
echo "$pg_password" > "$pg_dir/pwfile"; chown postgres "$pg_dir/pwfile"
su postgres -c "$pg_bin/initdb -D $pg_dir/data -U gptexp --pwfile=$pg_dir/pwfile -A scram-sha-256 >/dev/null"
rm -f "$pg_dir/pwfile"
su postgres -c "$pg_bin/pg_ctl -D $pg_dir/data -o '-h 127.0.0.1 -p $pg_port -k $pg_dir' -l $pg_dir/log -w start >/dev/null"
PGPASSWORD=$pg_password psql -h 127.0.0.1 -p "$pg_port" -U gptexp -d postgres -qc "CREATE DATABASE gptexp_test" >/dev/null
export GPTEXP_TEST_POSTGRES_URL="postgresql+psycopg://gptexp:${pg_password}@127.0.0.1:${pg_port}/gptexp_test"
echo "start-postgres: server on 127.0.0.1:$pg_port (data in $pg_dir)"
