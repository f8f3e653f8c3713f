#!/usr/bin/env bash
# Steady load for the chaos tests, run in the laptop namespace: every 250 ms
# one request of each kind, one line each: "EPOCH_MS KIND ok|fail DETAIL".
#   plain        curl to the Service (through the TUN, to a pod)
#   intercepted  curl to the Service with the intercept's header (back to the laptop)
#   redis        redis-cli PING to the Redis Service
# Runs until killed, or for at most $4 seconds.
#   chaos-load.sh HOST HEADER REDIS_HOST MAX_SECONDS
set -u
host=$1 header=$2 redis=$3 max=${4:-1800}
end=$((SECONDS + max))
now() { date +%s%3N; }
flat() { local s=${1//$'\n'/ }; echo "${s:0:80}"; }
while [ "$SECONDS" -lt "$end" ]; do
  out=$(curl -sS --max-time 3 "http://$host/chaos" 2>&1)
  case $out in *'"name":"echo"'*) echo "$(now) plain ok" ;; *) echo "$(now) plain fail $(flat "$out")" ;; esac
  out=$(curl -sS --max-time 3 -H "$header" "http://$host/chaos" 2>&1)
  case $out in *'"name":"echo-on-laptop"'*) echo "$(now) intercepted ok" ;; *) echo "$(now) intercepted fail $(flat "$out")" ;; esac
  out=$(timeout 3 redis-cli -h "$redis" PING 2>&1)
  case $out in PONG) echo "$(now) redis ok" ;; *) echo "$(now) redis fail $(flat "$out")" ;; esac
  sleep 0.25
done
