#!/usr/bin/env bash
# scripts/bench-irc.sh — transportd's IRC transport and biboumi side by side,
# each as its own process, measured the same way (transports/irc's
# BenchmarkRelay and BenchmarkJoinedUsers pointed at the process):
#
#   scripts/bench-irc.sh [BENCHTIME]        (default 300x)
#
# Both serve the component irc.a.test of a private test environment
# (scripts/testenv.sh with its own run directory and ports, so that tests
# restarting the shared Prosody do not disturb the measurement) and reach
# its InspIRCd on 127.0.0.1:6667 (biboumi tries ports 6667, 6670 and 6697).
# Needs root, like scripts/testenv.sh; biboumi is installed with apt-get
# when missing.
#
# Flood control is off on both sides: transportd's flood_rate is set very
# high, biboumi's throttle_limit to -1 (through its Configure command, which
# the benchmark runs). biboumi (Debian 9.0) cannot run without a database
# (without db_name it opens ~/.config/biboumi/biboumi.sqlite, and exits if
# it cannot): it gets a fresh SQLite file per run. It is measured twice:
# recording every channel message in that database, as it does by default,
# and with that off (its record_history setting, through Configure on its
# own JID). transportd too, with its rooms' archive (room_archive_days 7,
# the default) and without (0): like for like, twice.
# (db_name=:memory: also works, keeping biboumi's history in memory.)
#
# The Prosody gets 100 accounts per domain (TESTENV_USER_COUNT), for the
# memory figures with 1, 50 and 200 users joined (a second after the
# joins). The resident set is also taken once the 200 users sat idle for
# TRANSPORTD_BENCH_SETTLE (130s unless set; 0 skips it: past a Go
# process's periodic collection), from a baseline taken after the same
# idle wait before the first user: the "idle KiB/user" column. Both ends
# are the mean of a sample each second over the wait's last minute (a
# gateway's keepalives come every minute or two and what they allocate
# stays resident a while: one sample fell in or out of that by chance);
# the benchmark lines give the lowest and highest too. One user
# joins and leaves before that baseline, so that what a gateway loads once
# (its code for the IRC path) is not counted per user.
#
# For the memory at other numbers of users (what a user costs beyond what
# a gateway holds once, whatever its users):
#   TESTENV_USER_COUNT=500 TRANSPORTD_BENCH_USERS=1,200,1000 \
#     TRANSPORTD_BENCH_ONLY=JoinedUsers scripts/bench-irc.sh 1x
# (the idle figure is then taken at the largest; the table's columns stay
# those of 1/50/200: read the benchmark lines above it.)
#
# TRANSPORTD_BENCH_SMAPS_DIR=DIR keeps each gateway's /proc/PID/smaps at
# both ends of the idle figure (DIR/PID-before.smaps, PID-users-200.smaps):
# which mappings a difference between runs sits in.
#
# One run of each gateway varies from the next by more than the gateways
# differ on some figures (p50 by some 50 µs, throughput by a fifth).
# TRANSPORTD_BENCH_ROUNDS=N runs the four N times, taking turns, and the
# table gives each figure's median over the N, then its lowest and
# highest; the runs themselves are printed above it. The relay alone, five
# rounds (some 20 minutes):
#   TRANSPORTD_BENCH_ROUNDS=5 TRANSPORTD_BENCH_ONLY=Relay \
#     TRANSPORTD_BENCH_SETTLE=0 scripts/bench-irc.sh 300x
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.26.9}
benchtime=${1:-300x}
export TESTENV_DIR=$PWD/.testenv/bench-irc-env
export TESTENV_PROSODY_C2S_PORT=45222 TESTENV_PROSODY_COMPONENT_PORT=45347 TESTENV_PROSODY_HTTP_PORT=45280
export TESTENV_INSPIRCD_PORT=6667 TESTENV_INSPIRCD_TLS_PORT=46697 TESTENV_INSPIRCD_PASS_PORT=46670 TESTENV_INSPIRCD_IDENT_PORT=46671
export TESTENV_USER_COUNT=${TESTENV_USER_COUNT:-100}
export TRANSPORTD_BENCH_SETTLE=${TRANSPORTD_BENCH_SETTLE:-130s}
rounds=${TRANSPORTD_BENCH_ROUNDS:-1}
COMPONENT_JID=irc.a.test
RUN=$TESTENV_DIR/bench-irc
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	scripts/testenv.sh down prosody inspircd || true
}
trap cleanup EXIT
scripts/testenv.sh up prosody inspircd
eval "$(scripts/testenv.sh env)"
rm -rf "$RUN"
mkdir -p "$RUN"

# bench NAME PID [VAR=VALUE...]: the benchmarks against that process.
bench() {
	local name=$1 pid=$2
	shift 2
	echo "== $name (pid $pid)"
	echo "== $name" >>"$RUN/all.txt"
	env TRANSPORTD_BENCH_IRC_JID="$COMPONENT_JID" TRANSPORTD_BENCH_IRC_PID="$pid" "$@" \
		go test -run '^$' -bench "${TRANSPORTD_BENCH_ONLY:-Relay|JoinedUsers}" -benchtime "$benchtime" -count 1 ./transports/irc/ 2>&1 |
		grep -E '^(Benchmark|ok|FAIL|---)|bench_test' | tee -a "$RUN/all.txt" || true
}

# table: one row per gateway from $RUN/all.txt; with several rounds, each
# figure's median over them, then a row of the lowest and highest.
table() {
	echo
	echo "IRC gateways side by side ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $benchtime one at a time, ${TRANSPORTD_BENCH_BURSTS:-10} bursts of 200, $rounds round(s); CPU from /proc schedstat)"
	echo
	echo "| gateway | XMPP→IRC p50 / p99 ms | msgs/s | CPU ms/msg | IRC→XMPP p50 / p99 ms | msgs/s | CPU ms/msg | RSS MiB, 1 / 50 / 200 users | idle KiB/user |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	rows room
	if grep -q '^BenchmarkRelay/private-' "$RUN/all.txt"; then
		echo
		echo "Private messages (between the same two, on the same connections):"
		echo
		echo "| gateway | XMPP→IRC p50 / p99 ms | msgs/s | CPU ms/msg | IRC→XMPP p50 / p99 ms | msgs/s | CPU ms/msg |"
		echo "|---|---:|---:|---:|---:|---:|---:|"
		rows private
	fi
}

# rows room|private: the table's rows, for room messages (with the memory
# columns) or private ones.
rows() {
	awk -v mode="$1" '
	function v(name, unit,   i) { for (i = 3; i < NF; i++) if ($(i + 1) == unit) return $i; return "" }
	# stat(k, what): the median ("med"), lowest ("lo") or highest ("hi")
	# of the values m[gw, k, 1..n[gw, k]], as the table prints them.
	function stat(k, what,   c, i, j, t, a, x) {
		c = n[cur, k] + 0
		if (c == 0) return "–"
		for (i = 1; i <= c; i++) a[i] = m[cur, k, i] + 0
		for (i = 2; i <= c; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
		x = what == "lo" ? a[1] : what == "hi" ? a[c] : (c % 2 ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2)
		return x >= 1000 ? sprintf("%d", x + 0.5) : sprintf("%.4g", x)
	}
	function cells(what,   r) {
		r = sprintf("%s / %s | %s | %s | %s / %s | %s | %s", stat("x2i p50-ms", what), stat("x2i p99-ms", what), stat("x2i burst-msgs/s", what), stat("x2i cpu-ms/msg", what), stat("i2x p50-ms", what), stat("i2x p99-ms", what), stat("i2x burst-msgs/s", what), stat("i2x cpu-ms/msg", what))
		if (mode == "room") r = r sprintf(" | %s / %s / %s | %s", stat("u1 rss-MiB", what), stat("u50 rss-MiB", what), stat("u200 rss-MiB", what), stat("u200 settled-rss-KiB/user", what))
		return r
	}
	/^== / { gw = substr($0, 4); if (!(gw in seen)) { seen[gw] = 1; order[++ngw] = gw }; rounds[gw]++; next }
	/^Benchmark/ {
		name = $1; sub(/-[0-9]+$/, "", name)
		if (mode == "private") key = name ~ /private-to-irc$/ ? "x2i" : name ~ /private-to-xmpp$/ ? "i2x" : ""
		else key = name ~ /xmpp-to-irc$/ ? "x2i" : name ~ /irc-to-xmpp$/ ? "i2x" : name ~ /users-1$/ ? "u1" : name ~ /users-50$/ ? "u50" : name ~ /users-200$/ ? "u200" : ""
		if (key == "") next
		split("p50-ms p99-ms burst-msgs/s cpu-ms/msg rss-MiB settled-rss-KiB/user", us, " ")
		for (j in us) { x = v(name, us[j]); if (x != "") { k = key " " us[j]; m[gw, k, ++n[gw, k]] = x } }
	}
	END {
		for (g = 1; g <= ngw; g++) {
			cur = order[g]
			if (rounds[cur] > 1) {
				printf "| %s, median of %d | %s |\n", cur, rounds[cur], cells("med")
				printf "| (lowest) | %s |\n", cells("lo")
				printf "| (highest) | %s |\n", cells("hi")
			} else {
				printf "| %s | %s |\n", cur, cells("med")
			}
		}
	}
	' "$RUN/all.txt"
}

# transportd, built and run as a binary.
go build -o "$RUN/transportd" ./cmd/transportd
"$RUN/transportd" keygen -out "$RUN/key" >/dev/null
printf '%s' "$TRANSPORTD_TEST_COMPONENT_SECRET" >"$RUN/secret"
# run_transportd NAME DAYS: transportd with room_archive_days = DAYS (its
# default, 7, archives every channel message as biboumi's default does;
# 0 archives none), fresh database, benchmarks, stop.
run_transportd() {
	local name=$1 days=$2
	rm -f "$RUN"/transportd.db*
	cat >"$RUN/transportd.toml" <<TOML
[xmpp]
component_addr = "$TRANSPORTD_TEST_XMPP_COMPONENT"
[store]
path = "$RUN/transportd.db"
key_file = "$RUN/key"
[log]
level = "warn"
[domains."a.test"]
users = ["a.test", "b.test"]
[domains."a.test".transports.irc]
jid = "$COMPONENT_JID"
secret_file = "$RUN/secret"
room_archive_days = $days
[domains."a.test".transports.irc.defaults]
allowed_servers = "127.0.0.1"
port = "6667"
tls = "false"
flood_burst = "1000"
flood_rate = "100000"
TOML
	"$RUN/transportd" -config "$RUN/transportd.toml" >"$RUN/transportd.log" 2>&1 &
	local tpid=$!
	pids+=("$tpid")
	sleep 3
	bench "$name" "$tpid"
	kill "$tpid"
	wait "$tpid" 2>/dev/null || true
	sleep 2 # Prosody frees the component JID
}

# biboumi, with a fresh database per run.
command -v biboumi >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends biboumi >"$RUN/apt.log" 2>&1
# run_biboumi NAME [VAR=VALUE...]: start biboumi, run the benchmarks, stop it.
run_biboumi() {
	local name=$1
	shift
	rm -f "$RUN/biboumi.sqlite"
	cat >"$RUN/biboumi.cfg" <<CFG
hostname=$COMPONENT_JID
password=$TRANSPORTD_TEST_COMPONENT_SECRET
xmpp_server_ip=127.0.0.1
port=${TRANSPORTD_TEST_XMPP_COMPONENT##*:}
admin=
realname_customization=true
realname_from_jid=false
log_file=$RUN/biboumi.log
log_level=2
db_name=$RUN/biboumi.sqlite
CFG
	biboumi "$RUN/biboumi.cfg" >"$RUN/biboumi.console" 2>&1 &
	local bpid=$!
	pids+=("$bpid")
	sleep 3
	bench "$name" "$bpid" TRANSPORTD_BENCH_IRC_BIBOUMI=1 "$@"
	kill "$bpid"
	wait "$bpid" 2>/dev/null || true
	sleep 2 # Prosody frees the component JID
}
for ((round = 1; round <= rounds; round++)); do
	[ "$rounds" -gt 1 ] && echo "== round $round of $rounds" | tee -a "$RUN/round.log"
	run_transportd "transportd (rooms archived, the default)" 7
	run_transportd "transportd (room_archive_days = 0)" 0
	run_biboumi "biboumi (channel history recorded, the default)"
	run_biboumi "biboumi (record_history off)" TRANSPORTD_BENCH_BIBOUMI_HISTORY=off
done
table
