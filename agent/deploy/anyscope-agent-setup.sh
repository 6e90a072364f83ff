#!/bin/sh
# anyscope-agent-setup BINARY_URL SHA256 ping-group|no-ping-group
#
# Run once by the agent's cloud-init user data, as root, after the user
# anyscope, /etc/anyscope and the systemd unit exist: downloads the anyscope
# binary, installs it only if its SHA-256 is the one given, optionally lets
# the group anyscope open ICMP datagram sockets (net.ipv4.ping_group_range),
# then enables and starts anyscope-agent.service.
#
# ANYSCOPE_SETUP_ROOT, when set, is a directory standing for / (tests).
set -eu

if [ $# -ne 3 ]; then
	echo "usage: anyscope-agent-setup BINARY_URL SHA256 ping-group|no-ping-group" >&2
	exit 2
fi
url=$1
sum=$2
ping=$3
root=${ANYSCOPE_SETUP_ROOT:-}
case $ping in
ping-group | no-ping-group) ;;
*)
	echo "anyscope-agent-setup: third argument $ping: want ping-group or no-ping-group" >&2
	exit 2
	;;
esac

mkdir -p "$root/usr/local/bin"
tmp=$(mktemp "$root/usr/local/bin/.anyscope.XXXXXX")
trap 'rm -f "$tmp"' EXIT
if command -v curl >/dev/null 2>&1; then
	curl --fail --silent --show-error --location --proto '=http,https' \
		--proto-redir '=http,https' --retry 5 --retry-connrefused --retry-delay 3 --output "$tmp" "$url"
elif command -v wget >/dev/null 2>&1; then
	wget --quiet --tries=5 --output-document="$tmp" "$url"
else
	echo "anyscope-agent-setup: neither curl nor wget is installed" >&2
	exit 1
fi
if ! echo "$sum  $tmp" | sha256sum --check --status -; then
	echo "anyscope-agent-setup: $url does not have SHA-256 $sum; nothing installed" >&2
	exit 1
fi
chmod 0755 "$tmp"
mv -f "$tmp" "$root/usr/local/bin/anyscope"

if [ "$ping" = ping-group ]; then
	gid=$(getent group anyscope | cut -d: -f3)
	if [ -z "$gid" ]; then
		echo "anyscope-agent-setup: no group anyscope" >&2
		exit 1
	fi
	mkdir -p "$root/etc/sysctl.d"
	printf 'net.ipv4.ping_group_range = %s %s\n' "$gid" "$gid" >"$root/etc/sysctl.d/60-anyscope-ping.conf"
	sysctl -q -p "$root/etc/sysctl.d/60-anyscope-ping.conf"
fi

systemctl daemon-reload
systemctl enable --now anyscope-agent.service
