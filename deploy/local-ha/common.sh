# Shared by the deploy/local-ha scripts: where each part of the cluster lives and listens.
# Sourced, not run. Every part listens on 127.0.0.1, on ports from CTXD_HA_PORT_BASE (27000):
#   etcd members      client BASE+1..3, peer BASE+11..13
#   PostgreSQL        BASE+21..23 (each under Patroni, whose REST API is on BASE+31..33)
#   ctxd nodes        BASE+41..42
set -euo pipefail

dir=${1:?usage: $(basename "$0") DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
base=${CTXD_HA_PORT_BASE:-27000}
members=(1 2 3)
nodes=(1 2)
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)

etcd_client_port() { echo $((base + $1)); }
etcd_peer_port() { echo $((base + 10 + $1)); }
pg_port() { echo $((base + 20 + $1)); }
rest_port() { echo $((base + 30 + $1)); }
node_port() { echo $((base + 40 + $1)); }

# What ctxd connects to: every member, and libpq's rule to keep only the one that takes writes.
database_url() {
    local hosts=()
    for m in "${members[@]}"; do hosts+=("127.0.0.1:$(pg_port "$m")"); done
    local IFS=,
    echo "postgres://postgres@${hosts[*]}/ctxd?target_session_attrs=read-write"
}

say() { echo "local-ha: $*" >&2; }

# Every port the cluster listens on.
all_ports() {
    local m n
    for m in "${members[@]}"; do
        etcd_client_port "$m"; etcd_peer_port "$m"; pg_port "$m"; rest_port "$m"
    done
    for n in "${nodes[@]}"; do node_port "$n"; done
}

# The processes of this cluster still running: those whose command line names one of its
# parts' directories or files (etcd's data, a member's data or Patroni config, a node's data).
cluster_processes() {
    local pattern
    pattern="$(printf '%s' "$dir" | sed 's#[][\.*^$+?(){}|]#\\&#g')/(etcd[0-9]|pg[0-9]/|ctxd[0-9])"
    pgrep -f -- "$pattern" | grep -vx -e "$$" -e "$PPID" || true
}

# The pid recorded for a part (its process group: every part is started as a session leader).
pid_of() { cat "$dir/pids/$1" 2>/dev/null || true; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# The PostgreSQL postmaster of member $1, when it runs: the pid its pid file names, if that
# process is still this member's postmaster (a killed member's file stays, and pids are reused).
postmaster_of() {
    local file="$dir/pg$1/data/postmaster.pid"
    [ -f "$file" ] || return 0
    local pid
    pid=$(head -1 "$file")
    if alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/pg$1/data"; then
        echo "$pid"
    fi
}

# Every process of PostgreSQL member $1: its postmaster and the postmaster's children (each child
# leads a session of its own, so the postmaster's process group does not hold them).
member_processes() {
    local postmaster
    postmaster=$(postmaster_of "$1")
    [ -n "$postmaster" ] || return 0
    echo "$postmaster"
    pgrep -P "$postmaster" || true
}

# Sends signal $2 to the process group led by $1 (a part), and to $1 itself.
signal_group() {
    local pid=$1 signal=$2
    alive "$pid" || return 0
    kill "-$signal" -- "-$pid" 2>/dev/null || kill "-$signal" "$pid" 2>/dev/null || true
}
