#!/bin/sh
# Install (or upgrade) edge-station on a Raspberry Pi running Debian or
# Raspberry Pi OS with systemd. Idempotent: running it again gives the same
# result, and it never overwrites an existing /etc/edge-station/station.toml
# or /etc/udev/rules.d/99-edge-station.rules (both are site configuration).
#
#   sudo systemd/install.sh                 # full install from this source tree
#   DESTDIR=/tmp/root systemd/install.sh --no-apt --no-systemctl --no-pip
#                                           # into a throwaway root (tests, staging)
#
# What it does:
#   apt packages (python3-venv, mosquitto, curl, libzbar0; chromium and cage for the kiosk)
#   accounts edge-station and kiosk, groups gpio/dialout/video/... (systemd-sysusers)
#   /opt/edge-station/venv with the edge-station package
#   /etc/edge-station (config), /var/lib/edge-station (journal) (systemd-tmpfiles)
#   units in /usr/local/lib/systemd/system, udev rules, daemon-reload + enable
#   the Pi's hardware watchdog, fed by systemd (system.conf.d drop-in; see
#   drivers/gpio/FAILSAFE.md), unless --no-hardware-watchdog
#   /opt/edge-station/kiosk-offline.html (the kiosk's page while the station does not answer)
set -eu

usage() {
	cat <<'EOF'
usage: install.sh [--no-apt] [--no-systemctl] [--no-pip] [--no-kiosk] [--no-hardware-watchdog]
  --no-apt        do not install Debian packages
  --no-systemctl  do not run systemctl or udevadm (no daemon-reload, enable, restart)
  --no-pip        create the venv without pip and do not install the package into it
  --no-kiosk      no touchscreen: skip chromium, cage and edge-station-kiosk.service
  --no-hardware-watchdog
                  do not let systemd feed the hardware watchdog (RuntimeWatchdogSec=);
                  a station with relays on GPIO pins needs it
environment:
  DESTDIR         install below this directory instead of / (accounts go to its etc/)
  PYTHON          interpreter that creates the venv (default: python3)
EOF
}

apt=1
systemctl=1
pip=1
kiosk=1
hw_watchdog=1
for arg in "$@"; do
	case $arg in
	--no-apt) apt=0 ;;
	--no-systemctl) systemctl=0 ;;
	--no-pip) pip=0 ;;
	--no-kiosk) kiosk=0 ;;
	--no-hardware-watchdog) hw_watchdog=0 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		printf 'install.sh: unknown option %s\n' "$arg" >&2
		usage >&2
		exit 2
		;;
	esac
done

log() { printf 'edge-station install: %s\n' "$*"; }
die() {
	printf 'edge-station install: error: %s\n' "$*" >&2
	exit 1
}

src=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
destdir=${DESTDIR:-}
if [ -n "$destdir" ]; then
	mkdir -p -- "$destdir"
	destdir=$(CDPATH='' cd -- "$destdir" && pwd)
	[ "$destdir" = / ] && destdir=''
fi
python=${PYTHON:-python3}

opt=/opt/edge-station
unitdir=/usr/local/lib/systemd/system
sysusers=/usr/local/lib/sysusers.d/edge-station.conf
tmpfiles=/usr/local/lib/tmpfiles.d/edge-station.conf
udev_rules=/etc/udev/rules.d/99-edge-station.rules
config=/etc/edge-station/station.toml
sample=$src/systemd/station.example.toml
watchdog_conf=/usr/local/lib/systemd/system.conf.d/edge-station-watchdog.conf
boot_config=/boot/firmware/config.txt

units=edge-station.service
[ "$kiosk" = 1 ] && units="$units edge-station-kiosk.service"

if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
	die "run as root (or set DESTDIR to install into a staging root)"
fi
[ -f "$sample" ] || die "missing $sample"

# root_args: how systemd tools address the target root.
if [ -n "$destdir" ]; then
	set -- "--root=$destdir"
else
	set --
fi

# --- Debian packages -----------------------------------------------------------
if [ "$apt" = 1 ]; then
	packages="python3 python3-venv mosquitto curl libzbar0"
	[ "$kiosk" = 1 ] && packages="$packages chromium cage"
	log "installing packages: $packages"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# shellcheck disable=SC2086 # a word list on purpose
	apt-get install -y -q --no-install-recommends $packages
fi

# --- files owned by the installer (always brought up to date) ------------------
# put MODE SOURCE TARGET: copy unless identical; always (re)apply the mode.
put() {
	target=$destdir$3
	if [ ! -f "$target" ] || ! cmp -s -- "$2" "$target"; then
		mkdir -p -- "$(dirname -- "$target")"
		cp -- "$2" "$target.new.$$"
		mv -f -- "$target.new.$$" "$target"
		log "installed $3"
	fi
	chmod "$1" -- "$target"
}

put 0644 "$src/systemd/edge-station.sysusers" "$sysusers"
put 0644 "$src/systemd/edge-station.tmpfiles" "$tmpfiles"
for unit in $units; do
	put 0644 "$src/systemd/$unit" "$unitdir/$unit"
done
put 0644 "$sample" "$opt/station.example.toml"
if [ "$kiosk" = 1 ]; then
	# The kiosk's first page (file://): it waits for the station and then opens its page.
	put 0644 "$src/systemd/kiosk-offline.html" "$opt/kiosk-offline.html"
fi
if [ -f "$src/README.md" ]; then
	put 0644 "$src/README.md" "$opt/README.md"
fi
# The hardware watchdog (PID 1 feeds it): reexec systemd when the drop-in changed.
reexec=0
if [ "$hw_watchdog" = 1 ]; then
	if ! cmp -s -- "$src/systemd/edge-station-watchdog.conf" "$destdir$watchdog_conf"; then
		reexec=1
	fi
	put 0644 "$src/systemd/edge-station-watchdog.conf" "$watchdog_conf"
elif [ -e "$destdir$watchdog_conf" ]; then
	rm -f -- "$destdir$watchdog_conf"
	log "removed $watchdog_conf (--no-hardware-watchdog)"
	reexec=1
fi

# --- site configuration: installed once, never overwritten ----------------------
# keep MODE SOURCE TARGET
keep() {
	target=$destdir$3
	if [ -e "$target" ]; then
		log "kept existing $3"
		return 0
	fi
	mkdir -p -- "$(dirname -- "$target")"
	cp -- "$2" "$target.new.$$"
	chmod "$1" -- "$target.new.$$"
	mv -f -- "$target.new.$$" "$target"
	log "installed $3 (edit it for this site)"
}

keep 0644 "$src/systemd/99-edge-station.rules" "$udev_rules"
keep 0640 "$sample" "$config"

# --- accounts and folders ---------------------------------------------------------
mkdir -p -- "$destdir/etc"
command -v systemd-sysusers >/dev/null 2>&1 || die "systemd-sysusers not found (install systemd)"
command -v systemd-tmpfiles >/dev/null 2>&1 || die "systemd-tmpfiles not found (install systemd)"
# systemd tools take config paths literally, even with --root=.
systemd-sysusers "$@" "$destdir$sysusers"
# Creates /etc/edge-station, /var/lib/edge-station(-kiosk) and fixes the owner
# and mode of station.toml (it may hold OCPP and MQTT secrets).
systemd-tmpfiles "$@" --create "$destdir$tmpfiles"

# --- the application ---------------------------------------------------------------
mkdir -p -- "$destdir$opt"
chmod 0755 -- "$destdir$opt"
venv=$destdir$opt/venv
if [ ! -x "$venv/bin/python" ]; then
	log "creating $opt/venv"
	if [ "$pip" = 1 ]; then
		"$python" -m venv -- "$venv"
	else
		"$python" -m venv --without-pip -- "$venv"
	fi
fi
if [ "$pip" = 1 ]; then
	log "installing the edge-station package into $opt/venv"
	"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
		--upgrade -- "$src"
	# The service cannot write bytecode under ProtectSystem=strict: compile now.
	"$venv/bin/python" -m compileall -q "$venv/lib" >/dev/null || true
	[ -x "$venv/bin/edge-station" ] || die "$opt/venv/bin/edge-station missing after pip install"
fi

# --- systemd and udev -----------------------------------------------------------------
if [ "$systemctl" = 1 ]; then
	# shellcheck disable=SC2086 # a word list on purpose
	if [ -n "$destdir" ]; then
		# Offline: only the enablement symlinks inside the staging root.
		systemctl "$@" enable $units
	else
		if [ "$reexec" = 1 ]; then
			# system.conf settings (RuntimeWatchdogSec=) are read by a re-executed manager.
			systemctl daemon-reexec
		else
			systemctl daemon-reload
		fi
		systemctl enable $units
		# An upgrade restarts a running station; a first install waits for its config.
		systemctl try-restart $units
		udevadm control --reload
		udevadm trigger --action=change --subsystem-match=tty --subsystem-match=gpio
	fi
fi

if [ -f "$destdir$boot_config" ] && ! grep -q '^dtparam=strict_gpiod' "$destdir$boot_config"; then
	log "note: relays on GPIO pins also need dtparam=strict_gpiod in $boot_config"
	log "      (see /opt/edge-station/README.md and drivers/gpio/FAILSAFE.md)"
fi
log "done."
if [ -z "$destdir" ]; then
	log "next: edit $config, then: systemctl start $units"
	log "      journalctl -u edge-station -f   # follow the station's log"
fi
