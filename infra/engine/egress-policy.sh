#!/bin/sh
# Installs imgbuilder's egress policy for build steps on the Docker engine's host (or in the engine's container).
#
# Build steps (RUN in the classic builder and in BuildKit) run on the engine's default bridge. This script makes
# that bridge reach the public internet only: no loopback, none of the engine host's own addresses (the bridge
# gateway included), no link-local or metadata addresses (Azure's WireServer too), no private or shared ranges, no NAT64
# prefix (it reaches IPv4 addresses, private ones included, over IPv6). IMGBUILDER_BUILD_EGRESS_ALLOW (comma-separated
# CIDRs or host:port) opens exceptions, e.g. an internal package mirror; IMGBUILDER_BUILD_EGRESS_DENY (comma-separated
# CIDRs) closes more ranges. When the bridge carries IPv6 and ip6tables cannot be used, the script fails: a policy for
# IPv4 alone would leave build steps the engine host's IPv6 addresses.
#
# POSIX sh on purpose: it runs in Debian (infra/local/up.sh) and in the Alpine-based docker:dind sidecar (k8s and
# compose). Idempotent: the imgbuilder chains are rebuilt from scratch on every run, so running it again with another
# allow list replaces the previous one.
#
# Usage: egress-policy.sh [BRIDGE]        (default: docker0)
#        egress-policy.sh --remove [BRIDGE]
set -eu

REMOVE=0
if [ "${1:-}" = "--remove" ]; then
  REMOVE=1
  shift
fi
BRIDGE="${1:-${IMGBUILDER_BUILD_BRIDGE:-docker0}}"
ALLOW="${IMGBUILDER_BUILD_EGRESS_ALLOW:-}"
# Containers on the default bridge use the engine host's resolvers; when those sit at private addresses, build steps
# could resolve nothing. Port 53 of each resolver stays open unless IMGBUILDER_BUILD_EGRESS_DNS=off.
if [ "${IMGBUILDER_BUILD_EGRESS_DNS:-on}" != off ] && [ -r /etc/resolv.conf ]; then
  for ns in $(awk '$1 == "nameserver" && $2 !~ /^127\./ && $2 != "::1" {print $2}' /etc/resolv.conf); do
    case "$ns" in *:*) ALLOW="$ALLOW,[$ns]:53" ;; *) ALLOW="$ALLOW,$ns:53" ;; esac
  done
fi

FWD_CHAIN=IMGBUILDER-EGRESS
IN_CHAIN=IMGBUILDER-INPUT
# 168.63.129.16: Azure's WireServer (host agent, DNS, health probes), outside every private range.
V4_DENY="127.0.0.0/8 0.0.0.0/8 169.254.0.0/16 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10 224.0.0.0/4 240.0.0.0/4 168.63.129.16/32"
# fd00:ec2::254 (AWS metadata over IPv6) lies inside fc00::/7; 64:ff9b::/96 and 64:ff9b:1::/48 are NAT64 prefixes
# (RFC 6052, RFC 8215): through a NAT64 gateway they reach any IPv4 address, the ones denied above included.
V6_DENY="::1/128 fe80::/10 fc00::/7 ff00::/8 64:ff9b::/96 64:ff9b:1::/48"
for cidr in $(echo "${IMGBUILDER_BUILD_EGRESS_DENY:-}" | tr ',' ' '); do
  case "$cidr" in
    */*:*|*:*/*) V6_DENY="$V6_DENY $cidr" ;;
    */*) V4_DENY="$V4_DENY $cidr" ;;
    *) printf 'egress-policy: IMGBUILDER_BUILD_EGRESS_DENY entry "%s" is not a CIDR (like 203.0.113.0/24)\n' "$cidr" >&2; exit 64 ;;
  esac
done

say() { printf 'egress-policy: %s\n' "$*" >&2; }

# resolve NAME -> IPv4 addresses of NAME, one per line (NAME itself when it is an address already).
resolve() {
  case "$1" in
    *[!0-9.]*) ;;
    *) echo "$1"; return 0 ;;
  esac
  if command -v getent >/dev/null 2>&1; then
    getent ahostsv4 "$1" 2>/dev/null | awk '{print $1}' | sort -u
  else
    nslookup "$1" 2>/dev/null | awk '/^Address/ && $NF ~ /^[0-9.]+$/ {print $NF}' | sort -u
  fi
}

# ensure_jump TOOL PARENT RULE... : put the jump at the top of PARENT once.
ensure_jump() {
  tool=$1 parent=$2
  shift 2
  "$tool" -w -C "$parent" "$@" 2>/dev/null || "$tool" -w -I "$parent" 1 "$@"
}

remove_jump() {
  tool=$1 parent=$2
  shift 2
  while "$tool" -w -C "$parent" "$@" 2>/dev/null; do "$tool" -w -D "$parent" "$@"; done
}

reset_chain() {
  "$1" -w -N "$2" 2>/dev/null || "$1" -w -F "$2"
}

# allow_rules TOOL FAMILY: RETURN (= let through) rules for the allow list, in both chains.
allow_rules() {
  tool=$1 family=$2
  old_ifs=$IFS
  IFS=','
  for entry in $ALLOW; do
    IFS=$old_ifs
    entry=$(echo "$entry" | tr -d ' ')
    [ -n "$entry" ] || continue
    case "$entry" in
      \[*\]:*) # [v6]:port
        [ "$family" = 6 ] || continue
        host=${entry%]:*}; host=${host#[}; port=${entry##*]:}
        for proto in tcp udp; do
          "$tool" -w -A "$FWD_CHAIN" -d "$host" -p "$proto" --dport "$port" -j RETURN
          "$tool" -w -A "$IN_CHAIN" -d "$host" -p "$proto" --dport "$port" -j RETURN
        done ;;
      */*) # CIDR
        case "$entry" in *:*) [ "$family" = 6 ] || continue ;; *) [ "$family" = 4 ] || continue ;; esac
        "$tool" -w -A "$FWD_CHAIN" -d "$entry" -j RETURN
        "$tool" -w -A "$IN_CHAIN" -d "$entry" -j RETURN ;;
      *:*:*) # bare IPv6 address
        [ "$family" = 6 ] || continue
        "$tool" -w -A "$FWD_CHAIN" -d "$entry" -j RETURN
        "$tool" -w -A "$IN_CHAIN" -d "$entry" -j RETURN ;;
      *:*) # host:port (IPv4 or a name)
        [ "$family" = 4 ] || continue
        host=${entry%:*}; port=${entry##*:}
        addrs=$(resolve "$host")
        [ -n "$addrs" ] || { say "cannot resolve $host (IMGBUILDER_BUILD_EGRESS_ALLOW); skipped"; continue; }
        for a in $addrs; do
          for proto in tcp udp; do
            "$tool" -w -A "$FWD_CHAIN" -d "$a" -p "$proto" --dport "$port" -j RETURN
            "$tool" -w -A "$IN_CHAIN" -d "$a" -p "$proto" --dport "$port" -j RETURN
          done
        done ;;
      *) # bare IPv4 address or name
        [ "$family" = 4 ] || continue
        for a in $(resolve "$entry"); do
          "$tool" -w -A "$FWD_CHAIN" -d "$a" -j RETURN
          "$tool" -w -A "$IN_CHAIN" -d "$a" -j RETURN
        done ;;
    esac
    IFS=','
  done
  IFS=$old_ifs
}

# apply TOOL FAMILY DENY_RANGES
apply() {
  tool=$1 family=$2 deny=$3
  if [ "$REMOVE" = 1 ]; then
    remove_jump "$tool" DOCKER-USER -i "$BRIDGE" -j "$FWD_CHAIN"
    remove_jump "$tool" INPUT -i "$BRIDGE" -j "$IN_CHAIN"
    for c in "$FWD_CHAIN" "$IN_CHAIN"; do "$tool" -w -F "$c" 2>/dev/null || true; "$tool" -w -X "$c" 2>/dev/null || true; done
    return 0
  fi
  # Docker creates DOCKER-USER when it starts; create it here too so the order of start-up does not matter
  # (dockerd keeps an existing DOCKER-USER and its rules).
  "$tool" -w -N DOCKER-USER 2>/dev/null || true
  "$tool" -w -C FORWARD -j DOCKER-USER 2>/dev/null || "$tool" -w -I FORWARD 1 -j DOCKER-USER
  reset_chain "$tool" "$FWD_CHAIN"
  reset_chain "$tool" "$IN_CHAIN"
  # Replies to connections the host or the internet opened stay allowed.
  "$tool" -w -A "$FWD_CHAIN" -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
  "$tool" -w -A "$IN_CHAIN" -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
  allow_rules "$tool" "$family"
  reset_kind=icmp-port-unreachable
  [ "$family" = 6 ] && reset_kind=icmp6-port-unreachable
  for range in $deny; do
    "$tool" -w -A "$FWD_CHAIN" -d "$range" -p tcp -j REJECT --reject-with tcp-reset
    "$tool" -w -A "$FWD_CHAIN" -d "$range" -j REJECT --reject-with "$reset_kind"
  done
  # Anything addressed to the engine host itself (gateway, every other address of the host) is refused.
  "$tool" -w -A "$IN_CHAIN" -p tcp -j REJECT --reject-with tcp-reset
  "$tool" -w -A "$IN_CHAIN" -j REJECT --reject-with "$reset_kind"
  ensure_jump "$tool" DOCKER-USER -i "$BRIDGE" -j "$FWD_CHAIN"
  ensure_jump "$tool" INPUT -i "$BRIDGE" -j "$IN_CHAIN"
}

# Whether containers on the bridge can speak IPv6 to the host: IPv6 not turned off there and an address on it (a
# link-local one is enough to reach the host's services on the bridge).
bridge_has_ipv6() {
  [ "$(cat "/proc/sys/net/ipv6/conf/$BRIDGE/disable_ipv6" 2>/dev/null || echo 1)" = 0 ] && ip -6 addr show dev "$BRIDGE" 2>/dev/null | grep -q inet6
}

command -v iptables >/dev/null 2>&1 || { say "iptables not found"; exit 1; }
if command -v ip6tables >/dev/null 2>&1 && ip6tables -w -L -n >/dev/null 2>&1; then
  V6_USABLE=1
else
  V6_USABLE=0
  if [ "$REMOVE" = 0 ] && bridge_has_ipv6; then
    say "$BRIDGE carries IPv6 but ip6tables cannot be used here (missing, or the kernel lacks ip6_tables/nf_tables for IPv6): refusing to install an IPv4-only policy that build steps could bypass over IPv6; install ip6tables, or turn IPv6 off on the bridge (sysctl net.ipv6.conf.$BRIDGE.disable_ipv6=1)"
    exit 1
  fi
fi
apply iptables 4 "$V4_DENY"
[ "$V6_USABLE" = 0 ] || apply ip6tables 6 "$V6_DENY"
if [ "$REMOVE" = 1 ]; then
  say "removed from $BRIDGE"
else
  say "installed on $BRIDGE${ALLOW:+ (allowed: ${ALLOW#,})}"
fi
