# shellcheck shell=bash
# Starting and waiting for the local stack's daemons (sourced by up.sh after lib.sh).

# launch NAME LOGFILE CMD... : start CMD in its own session (so it survives this script and its
# process group), stdin from /dev/null, stdout+stderr appended to LOGFILE; pid -> $STATE/NAME.pid.
launch() {
  local name=$1 logfile=$2
  shift 2
  printf '\n=== %s starting %s: %s\n' "$(date -Is)" "$name" "$*" >>"$logfile"
  setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
  printf '%s\n' "$!" >"$STATE/$name.pid"
}

# wait_ready NAME PIDFILE_NAME LOGFILE CHECK_CMD... : poll CHECK_CMD until it succeeds, bounded by
# READY_TIMEOUT; fail early (with the log tail) if the launched process exits.
wait_ready() {
  local name=$1 pidname=$2 logfile=$3 pid="" deadline
  shift 3
  [[ -n "$pidname" && -f "$STATE/$pidname.pid" ]] && pid=$(<"$STATE/$pidname.pid")
  deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [[ -n "$pid" ]] && ! pid_alive "$pid"; then
      log_tail "$logfile"
      log "$name exited during startup (log: $logfile)"
      return 2
    fi
    sleep 0.2
  done
  log_tail "$logfile"
  log "$name not ready after ${READY_TIMEOUT}s (log: $logfile)"
  return 1
}

# ensure_port_free NAME PORT: die with a clear message if someone else listens on PORT.
ensure_port_free() {
  local name=$1 port=$2 pid
  port_in_use "$port" || return 0
  pid=$(port_listener "$port")
  die "$name: port 127.0.0.1:$port is already used by another process${pid:+ (pid $pid: $(pid_cmdline "$pid"))}, not started by this script with state dir $STATE; stop it or choose another port (IMGBUILDER_LOCAL_*_PORT)"
}
