#!/usr/bin/env bash
# A real single-node Slurm on this machine, for the cluster tests (tests/slurm.rs)
# and for trying `dreamartist sweep --slurm` without a cluster.
#
#   scripts/slurm-local.sh install   # apt-get slurm-wlm + munge (root)
#   scripts/slurm-local.sh start     # write /etc/slurm/slurm.conf for this host, start munged,
#                                    # slurmctld and slurmd, wait until the node is idle
#   scripts/slurm-local.sh status    # sinfo
#   scripts/slurm-local.sh stop
#
# Needs root (the daemons run as root here: a throwaway single-node cluster).
# Accounting is off (no slurmdbd): `sacct` answers nothing, which dreamartist
# handles (the runs' own files say how each task ended).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm

die() { echo "slurm-local: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root (it starts munged, slurmctld and slurmd)"; }

install() {
    need_root
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return 0; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    # Leave 2 GiB to the system.
    mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 2048 ))
    mkdir -p /etc/slurm "$STATE" "$SPOOL" "$LOGS"
    cat > "$CONF" <<CONF
# Written by dreamartist's scripts/slurm-local.sh: a single-node test cluster.
ClusterName=dreamartist-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MpiDefault=none
# Quick turns for tests: requeue and kill without long waits; ended jobs stay
# visible to squeue/scontrol for a while.
KillWait=20
MinJobAge=600
# Requeued jobs wait this long before they start again (default 120 s).
AuthInfo=cred_expire=5
SchedulerParameters=defer_batch=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
    need_root
    command -v slurmctld >/dev/null || die "slurmctld is not installed: run '$0 install' first"
    write_conf
    if ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge && chown munge:munge /run/munge
        runuser -u munge -- /usr/sbin/munged || die "munged did not start"
    fi
    pgrep -x slurmctld >/dev/null || slurmctld -i || die "slurmctld did not start (see $LOGS/slurmctld.log)"
    pgrep -x slurmd >/dev/null || slurmd || die "slurmd did not start (see $LOGS/slurmd.log)"
    for _ in $(seq 1 60); do
        state=$(sinfo -h -o %t 2>/dev/null | head -1 || true)
        case "$state" in
            idle|mix|alloc) echo "slurm-local: node $(hostname -s) is $state"; return 0 ;;
            down*|drain*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    die "the node did not become idle in 60 s: $(sinfo 2>&1 | tail -2)"
}

stop() {
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 install|start|status|stop" >&2; exit 2 ;;
esac
