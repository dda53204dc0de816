#!/usr/bin/env bash
# One-command demo: a private redis-server, three leaseholdd members on the root jobs.yaml,
# a crash failover and a graceful handover, then everything it started is cleaned up.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.build/debug
NS=demo
WORK=$(mktemp -d /tmp/leasehold-demo.XXXXXX)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]:-}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]:-}"; do kill -KILL "$pid" 2>/dev/null || true; done
  [ -n "${REDIS_PID:-}" ] && kill -TERM "$REDIS_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
lease_of() { redis-cli -p "$PORT" GET "{$NS}:{$1}:lease"; }
leader_of() { lease_of "$1" | sed 's/@.*//'; }
member_pid() { case "$1" in demo-1) echo "${PIDS[0]}";; demo-2) echo "${PIDS[1]}";; demo-3) echo "${PIDS[2]}";; esac; }
wait_for() {  # wait_for SECONDS COMMAND...: polls until the command succeeds
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$deadline" ] && { echo "timed out waiting for: $*" >&2; return 1; }
    sleep 0.2
  done
}

say "building (swift build)"
make -s deps
swift build 2>&1 | tail -1

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
say "starting a private redis-server on 127.0.0.1:$PORT"
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" &
REDIS_PID=$!
wait_for 10 redis-cli -p "$PORT" PING
export LEASEHOLD_REDIS_URL="redis://127.0.0.1:$PORT/0"

# The demo catalog is the root jobs.yaml, in its own namespace.
sed "s/namespace: leasehold/namespace: $NS/" jobs.yaml > "$WORK/jobs.yaml"
cli() { "$BIN/leasehold" "$@" --config "$WORK/jobs.yaml"; }

say "starting three members: demo-1, demo-2, demo-3 (logs in $WORK)"
for i in 1 2 3; do
  "$BIN/leaseholdd" --config "$WORK/jobs.yaml" --name "demo-$i" > "$WORK/demo-$i.log" 2>&1 &
  PIDS+=($!)
  disown  # so bash does not announce the kill -9 below as if it were an error
done

say "waiting for placement to settle (leadership spreads over the members)"
wait_for 30 bash -c "for j in heartbeat disk-report nightly-cleanup queue-consumer; do [ -n \"\$(redis-cli -p $PORT GET '{$NS}:{'\$j'}:lease')\" ] || exit 1; done"
sleep 12
cli status

JOB=queue-consumer
VICTIM=$(leader_of "$JOB")
OLD=$(lease_of "$JOB")
say "kill -9 $VICTIM, the leader of $JOB (lease 5s): its guardian releases the lease once the job is stopped, and a standby takes over at once (with crash_release: false, after the TTL)"
kill -KILL "$(member_pid "$VICTIM")"
START=$(date +%s.%N)
wait_for 20 bash -c "v=\$(redis-cli -p $PORT GET '{$NS}:{$JOB}:lease'); [ -n \"\$v\" ] && [ \"\$v\" != '$OLD' ]"
END=$(date +%s.%N)
echo "new lease: $(lease_of "$JOB") (was $OLD), after $(python3 -c "print(f'{$END-$START:.2f}')") s"
cli status
cli history "$JOB" --limit 5

SURVIVOR=$(leader_of "$JOB")
say "SIGTERM $SURVIVOR (graceful): its jobs are handed over at once"
kill -TERM "$(member_pid "$SURVIVOR")"
wait_for 20 bash -c "! kill -0 $(member_pid "$SURVIVOR")"
sleep 0.5
cli status
cli members

say "done: cleaning up every process this demo started"
