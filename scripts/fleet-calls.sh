#!/bin/bash
# Steady-state Redis script calls of a fleet of real leaseholdd processes (Docs/BENCHMARKS.md,
# "Catalogs advertised"). Needs a jobs.yaml in the working directory.
# usage: fleet-calls.sh BINARY MEMBERS LABEL
BIN=$(realpath "$1"); N=$2; LABEL=$3; PORT=$((16400 + RANDOM % 500))
cd "${COST_DIR:-.}"
redis-server --port $PORT --save '' --appendonly no --daemonize yes --logfile /dev/null; sleep 0.5
pids=()
for i in $(seq 1 $N); do $BIN --config jobs.yaml --redis redis://127.0.0.1:$PORT --name q$i --log-level warning > /dev/null 2>&1 & pids+=($!); done
sleep 25
redis-cli -p $PORT config resetstat >/dev/null; l1=$(cut -d' ' -f1 /proc/loadavg); sleep 40
stats=$(redis-cli -p $PORT info commandstats); calls=$(echo "$stats" | grep cmdstat_evalsha | sed "s/.*evalsha:calls=\([0-9]*\),.*/\1/"); calls=${calls:-0}; echo "$stats" | grep -E "evalsha|cmdstat_eval:" >&2
ticks=$(python3 -c "print($N*40/(2/3))")
echo "$LABEL members=$N evalsha_40s=$calls calls_per_member_tick=$(python3 -c "print(round($calls/$ticks,2))") load=$l1-$(cut -d' ' -f1 /proc/loadavg)"
kill ${pids[@]}; wait 2>/dev/null; redis-cli -p $PORT shutdown nosave >/dev/null 2>&1
