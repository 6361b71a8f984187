#!/bin/sh
# Remove edge-station installed by systemd/install.sh.
#
#   sudo systemd/uninstall.sh            # stop, disable, remove the program and units;
#                                        # keep the journal, config and udev rules
#   sudo systemd/uninstall.sh --purge    # also delete /etc/edge-station, the journal in
#                                        # /var/lib/edge-station, the kiosk profile and
#                                        # the udev rules
#   DESTDIR=/tmp/root systemd/uninstall.sh --no-systemctl   # a staging root (tests)
#
# The edge-station and kiosk accounts are kept even with --purge (as Debian does
# for system users): files elsewhere may still belong to their uids.
set -eu

usage() {
	cat <<'EOF'
usage: uninstall.sh [--purge] [--no-systemctl]
  --purge         also delete the config, the journal, the kiosk profile and the udev rules
  --no-systemctl  do not run systemctl or udevadm
environment:
  DESTDIR         remove from below this directory instead of /
EOF
}

purge=0
systemctl=1
for arg in "$@"; do
	case $arg in
	--purge) purge=1 ;;
	--no-systemctl) systemctl=0 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		printf 'uninstall.sh: unknown option %s\n' "$arg" >&2
		usage >&2
		exit 2
		;;
	esac
done

log() { printf 'edge-station uninstall: %s\n' "$*"; }

destdir=${DESTDIR:-}
if [ -n "$destdir" ]; then
	[ -d "$destdir" ] || {
		log "nothing installed in $destdir"
		exit 0
	}
	destdir=$(CDPATH='' cd -- "$destdir" && pwd)
	[ "$destdir" = / ] && destdir=''
fi
if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
	printf 'edge-station uninstall: error: run as root (or set DESTDIR)\n' >&2
	exit 1
fi

unitdir=/usr/local/lib/systemd/system
units="edge-station-kiosk.service edge-station.service"

# remove PATH...: absolute paths (constants of this script), below DESTDIR.
remove() {
	for path in "$@"; do
		if [ -e "$destdir$path" ] || [ -L "$destdir$path" ]; then
			rm -rf -- "$destdir$path"
			log "removed $path"
		fi
	done
}

# Stop the kiosk first, then the station (which announces STOPPING and parks the bays).
if [ "$systemctl" = 1 ]; then
	if [ -n "$destdir" ]; then
		for unit in $units; do
			if [ -e "$destdir$unitdir/$unit" ]; then
				systemctl --root="$destdir" disable "$unit" || true
			fi
		done
	else
		for unit in $units; do
			if systemctl cat "$unit" >/dev/null 2>&1; then
				systemctl disable --now "$unit" || true
			fi
		done
	fi
fi

for unit in $units; do
	remove "$unitdir/$unit"
done
remove /usr/local/lib/sysusers.d/edge-station.conf \
	/usr/local/lib/tmpfiles.d/edge-station.conf \
	/usr/local/lib/systemd/system.conf.d/edge-station-watchdog.conf \
	/opt/edge-station

if [ "$purge" = 1 ]; then
	remove /etc/edge-station \
		/var/lib/edge-station \
		/var/lib/edge-station-kiosk \
		/etc/udev/rules.d/99-edge-station.rules
	for unit in $units; do
		# Drop-ins made with `systemctl edit` are site configuration too.
		remove "/etc/systemd/system/$unit.d"
	done
else
	for path in /etc/edge-station /var/lib/edge-station; do
		if [ -e "$destdir$path" ]; then
			log "kept $path (use --purge to delete it)"
		fi
	done
fi

if [ "$systemctl" = 1 ] && [ -z "$destdir" ]; then
	# Re-executed, the manager also drops the hardware-watchdog setting removed above.
	systemctl daemon-reexec
	# shellcheck disable=SC2086 # a word list on purpose
	systemctl reset-failed $units 2>/dev/null || true
	if [ "$purge" = 1 ]; then
		udevadm control --reload || true
	fi
fi
log "done."
