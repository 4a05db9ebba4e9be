#!/usr/bin/env bash
# make bench: one table of the gateway's numbers per transport — latency
# each way (p50 and p99, one message at a time), messages per second (200
# in flight), and the resident memory each idle session adds at 1, 100 and
# 1,000 sessions — from the go test benchmarks of core, transports/email
# transports/sms and transports/irc (BENCH_IRC=0 leaves IRC out), then the
# IRC transport and biboumi side by side (BENCH_BIBOUMI=0 leaves that out).
#
#   scripts/bench.sh            about 5 minutes
#   BENCHTIME=100x scripts/bench.sh
#
# Servers: its own Prosody, Dovecot and InspIRCd (scripts/testenv.sh in
# BENCH_TESTENV_DIR, default /tmp/benchenv, ports 37xxx), so shared test
# servers and their component connections are left alone; stopped at the
# end if the script started them (BENCH_KEEP_SERVERS=1 keeps them). The
# MTA is replaced by an SMTP server in the test process (one OpenSMTPD per
# machine is shared, and its queue is not the gateway's latency): mail in
# is delivered over LMTP straight into Dovecot. Twilio is the fake of
# transports/sms.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.26.9}
export GOFLAGS=${GOFLAGS:--buildvcs=false}
benchtime=${BENCHTIME:-200x}

export TESTENV_DIR=${BENCH_TESTENV_DIR:-/tmp/benchenv}
export TESTENV_PROSODY_C2S_PORT=${TESTENV_PROSODY_C2S_PORT:-37222}
export TESTENV_PROSODY_COMPONENT_PORT=${TESTENV_PROSODY_COMPONENT_PORT:-37347}
export TESTENV_PROSODY_HTTP_PORT=${TESTENV_PROSODY_HTTP_PORT:-37280}
export TESTENV_DOVECOT_IMAP_PORT=${TESTENV_DOVECOT_IMAP_PORT:-37143}
export TESTENV_DOVECOT_LMTP_PORT=${TESTENV_DOVECOT_LMTP_PORT:-37024}
export TESTENV_DOVECOT_SUBMISSION_PORT=${TESTENV_DOVECOT_SUBMISSION_PORT:-37587}
export TESTENV_DOVECOT_PUSH_PORT=${TESTENV_DOVECOT_PUSH_PORT:-37081}
export TESTENV_INSPIRCD_PORT=${TESTENV_INSPIRCD_PORT:-37667}
export TESTENV_INSPIRCD_TLS_PORT=${TESTENV_INSPIRCD_TLS_PORT:-37697}
export TESTENV_INSPIRCD_PASS_PORT=${TESTENV_INSPIRCD_PASS_PORT:-37670}
export TESTENV_INSPIRCD_IDENT_PORT=${TESTENV_INSPIRCD_IDENT_PORT:-37671}
services=(prosody dovecot)
[[ ${BENCH_IRC:-1} != 0 ]] && services+=(inspircd)
started=()
for s in "${services[@]}"; do
	scripts/testenv.sh status "$s" >/dev/null 2>&1 || started+=("$s")
done
((${#started[@]})) && scripts/testenv.sh up "${started[@]}" >/dev/null
cleanup() {
	if ((${#started[@]})) && [[ -z ${BENCH_KEEP_SERVERS:-} ]]; then
		scripts/testenv.sh down "${started[@]}" >/dev/null || true
	fi
}
trap cleanup EXIT
eval "$(scripts/testenv.sh env)"

out=$(mktemp -d /tmp/bench.XXXXXX)
run() { # run PKG BENCH BENCHTIME
	echo "bench: $1 $2 ($3)" >&2
	go test -run '^$' -bench "$2" -benchtime "$3" -count 1 -timeout 20m "$1" >>"$out/raw.txt" 2>&1 ||
		echo "bench: $1 $2 failed (see $out/raw.txt)" >&2
}
run ./core/ '^BenchmarkEchoRoundTrip$' "$benchtime"
run ./transports/email/ '^Benchmark(XMPPToMail|MailToXMPPLMTP|MailToXMPPLMTPPush)$' "$benchtime"
run ./transports/email/ '^BenchmarkEmailIdleRSS$' 1x
run ./transports/sms/ '^Benchmark(XMPPToTwilio|WebhookToXMPP)$' "$benchtime"
run ./transports/sms/ '^BenchmarkWebhookBurst$' 3x
run ./transports/sms/ '^BenchmarkSMSIdleRSS$' 1x
if [[ ${BENCH_IRC:-1} != 0 ]]; then
	run ./transports/irc/ '^BenchmarkRelay$' "$benchtime"
	run ./transports/irc/ '^BenchmarkSessionMemory$' 1x
fi

# "Benchmark<Name>[/sub]-<procs>  N  v unit  v unit ..." → "name unit value".
# A log line written while the benchmark ran can split its line in two: the
# numbers then follow on a line of their own.
awk '
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	if ($2 ~ /^[0-9]+$/) { for (i = 3; i < NF; i += 2) print name, $(i + 1), $i; name = "" }
	next
}
name != "" && $1 ~ /^[0-9]+$/ && $3 == "ns/op" { for (i = 2; i < NF; i += 2) print name, $(i + 1), $i; name = "" }
' "$out/raw.txt" >"$out/metrics.txt"

m() { # m NAME UNIT → value, or "–"
	awk -v n="$1" -v u="$2" '$1 == n && $2 == u { v = $3 } END { if (v == "") print "–"; else printf "%s", v }' "$out/metrics.txt"
}
kib() { # kib VALUE-IN-BYTES → KiB, one decimal
	[[ $1 == – ]] && { echo "–"; return; }
	awk -v v="$1" 'BEGIN { printf "%.1f", v / 1024 }'
}
f() { # f VALUE → one decimal
	[[ $1 == – ]] && { echo "–"; return; }
	printf '%.1f' "$1"
}
row() { # row TRANSPORT PATH BENCH [MSGS-UNIT [RSS-BENCH [MSGS-BENCH [LATENCY-PREFIX]]]]
	local rss1=– rss100=– rss1000=–
	if [[ -n ${5:-} ]]; then
		rss1=$(f "$(m "$5" 'rss-KiB/session@1')")
		rss100=$(f "$(m "$5" 'rss-KiB/session@100')")
		rss1000=$(f "$(m "$5" 'rss-KiB/session@1000')")
	fi
	printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$2" \
		"$(f "$(m "$3" "${7:-}p50-ms")")" "$(f "$(m "$3" "${7:-}p99-ms")")" "$(f "$(m "${6:-$3}" "${4:-burst-msgs/s}")")" "$rss1" "$rss100" "$rss1000"
}
{
	echo
	echo "transportd benchmarks ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $benchtime one at a time, bursts of 200)"
	echo
	echo "| transport | path | p50 ms | p99 ms | msgs/s | RSS KiB/idle session @1 | @100 | @1000 |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|"
	row "core (echo)" "XMPP → gateway → XMPP" BenchmarkEchoRoundTrip pipelined-msgs/s
	row email "XMPP → SMTP" BenchmarkXMPPToMail burst-msgs/s BenchmarkEmailIdleRSS
	row email "LMTP into Dovecot → IMAP IDLE → XMPP" BenchmarkMailToXMPPLMTP
	row email "… of which IDLE's EXISTS → XMPP (gateway)" BenchmarkMailToXMPPLMTP none "" "" gw-
	row email "LMTP into Dovecot → push notice → XMPP" BenchmarkMailToXMPPLMTPPush
	row sms "XMPP → Twilio" BenchmarkXMPPToTwilio burst-msgs/s BenchmarkSMSIdleRSS
	row sms "webhook → XMPP" BenchmarkWebhookToXMPP burst-msgs/s "" BenchmarkWebhookBurst
	if [[ ${BENCH_IRC:-1} != 0 ]]; then
		row irc "XMPP → IRC (room)" BenchmarkRelay/xmpp-to-irc burst-msgs/s |
			sed "s/| – | – | – |\$/| $(kib "$(m BenchmarkSessionMemory/users-1/own-channels rss-B/user)") | – | – |/"
		row irc "IRC → XMPP (room)" BenchmarkRelay/irc-to-xmpp burst-msgs/s
	fi
	echo
	echo "Latency: one message at a time, from the client's (or the foreign network's) send to the other side."
	echo "msgs/s: 200 messages in flight (e-mail and SMS out: to 10 recipients). RSS: growth of the process's"
	echo "resident set per idle session (the transport's session; core's per-user state not included); e-mail"
	echo "sessions share the 40 Dovecot mailboxes."
	if [[ ${BENCH_IRC:-1} != 0 ]]; then
		echo "IRC sessions (each its own IRC connection and channel) at 50 and 200 users:" \
			"$(kib "$(m BenchmarkSessionMemory/users-50/own-channels rss-B/user)") and" \
			"$(kib "$(m BenchmarkSessionMemory/users-200/own-channels rss-B/user)") KiB RSS each;" \
			"200 users in one channel: $(kib "$(m BenchmarkSessionMemory/users-200/one-channel rss-B/user)") KiB each."
	fi
	echo "Raw output: $out/raw.txt"
} | tee "$out/table.md"

# The IRC transport and biboumi side by side, the same benchmarks pointed at
# each gateway run as its own process (scripts/bench-irc.sh: its own Prosody
# and InspIRCd; biboumi installed with apt-get when missing).
if [[ ${BENCH_IRC:-1} != 0 && ${BENCH_BIBOUMI:-1} != 0 ]]; then
	scripts/bench-irc.sh "$benchtime" | tee "$out/irc-side-by-side.txt" | sed -n '/^IRC gateways side by side/,$p' | tee -a "$out/table.md"
fi
