# Shared helpers of the appliance's start-up scripts (busybox ash).
# Sourced, not run. Everything prints to the console with a "mxrack-init:"
# prefix so a technician (and the HIL harness) can follow the boot.

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

MXRACK_RUN=/run/mxrack
BOARD_CONF=/etc/mxrack/board.conf

# Board defaults; /etc/mxrack/board.conf (from the board's overlay) overrides them.
BOARD=unknown
MODULES=""
NET_IFACE=eth0
NET_MODE=dhcp
NET_ADDRESS=""
NET_GATEWAY=""
NET_DNS=""
DATA_DISKS=3
DISK_WAIT_SECS=60
RAID_DEVICE=/dev/md0
RAID_NAME=data
RAID_HOMEHOST=mxrack
DATA_MOUNT=/data
# shellcheck disable=SC1090
[ -r "$BOARD_CONF" ] && . "$BOARD_CONF"

# The real program (not a busybox applet link) of that name: busybox built
# with "prefer applets" would run its own mke2fs, which has no ext4.
real_program() {
    for d in /usr/sbin /sbin /usr/bin /bin; do
        if [ -x "$d/$1" ] && [ ! -L "$d/$1" ]; then
            echo "$d/$1"
            return
        fi
    done
    echo "$1"
}

# The start-up log in RAM, which the log collector (mxrack logs collect)
# copies to the data array; kept under 1 MiB (one older generation).
BOOT_LOG=/run/mxrack/boot.log
boot_log() {
    [ -d /run/mxrack ] || return 0
    if [ -f "$BOOT_LOG" ] && [ "$(wc -c <"$BOOT_LOG")" -gt 1048576 ]; then
        mv -f "$BOOT_LOG" "$BOOT_LOG.old"
    fi
    echo "$*" >>"$BOOT_LOG"
}

# Ends the log collector before /data is unmounted (shutdown, replica
# demote): it writes what it has once its input ends, then is stopped.
stop_log_collector() {
    cpid=$(cat /run/mxrack/collector.pid 2>/dev/null)
    [ -n "$cpid" ] || return 0
    i=0
    while kill -0 "$cpid" 2>/dev/null && [ $i -lt 30 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill "$cpid" 2>/dev/null
    i=0
    while kill -0 "$cpid" 2>/dev/null && [ $i -lt 20 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -KILL "$cpid" 2>/dev/null
    rm -f /run/mxrack/collector.pid
}

log() {
    echo "mxrack-init: $*"
    boot_log "mxrack-init: $*" 2>/dev/null
}

warn() {
    echo "mxrack-init: WARNING: $*"
    boot_log "mxrack-init: WARNING: $*" 2>/dev/null
}

# Seconds since boot, with hundredths, from /proc/uptime.
uptime_s() {
    read -r up _ </proc/uptime
    echo "$up"
}

# True when the path is a mount point.
is_mounted() {
    grep -q " $1 " /proc/mounts 2>/dev/null
}

# A file's first line, or nothing.
first_line() {
    [ -r "$1" ] && head -n 1 "$1" 2>/dev/null
}

# The disk's serial number, from the SCSI VPD page 0x80 (SCSI and SATA
# disks), or the sysfs attribute of virtio and NVMe disks. Disks are named
# by serial or WWN, never by their kernel name, which changes on a swap.
disk_serial() {
    d=/sys/block/$1
    if [ -r "$d/device/vpd_pg80" ]; then
        # 4-byte page header, then the serial, space or NUL padded.
        tail -c +5 "$d/device/vpd_pg80" 2>/dev/null | tr -d '\000' | sed 's/^ *//; s/ *$//'
    elif [ -r "$d/serial" ]; then
        sed 's/^ *//; s/ *$//' "$d/serial"
    elif [ -r "$d/device/serial" ]; then
        sed 's/^ *//; s/ *$//' "$d/device/serial"
    fi
}

disk_wwn() {
    d=/sys/block/$1
    if [ -r "$d/device/wwid" ]; then
        first_line "$d/device/wwid"
    elif [ -r "$d/wwid" ]; then
        first_line "$d/wwid"
    fi
}

# Whole disks that can hold appliance data: SCSI/SATA, virtio and NVMe
# disks with no partitions (a disk with partitions is the boot disk or
# someone else's; it is never touched).
data_disk_candidates() {
    for d in /sys/block/*; do
        n=${d##*/}
        case "$n" in
            sd* | vd* | nvme*n*) ;;
            *) continue ;;
        esac
        [ -e "$d/device" ] || continue
        size=$(cat "$d/size" 2>/dev/null || echo 0)
        [ "$size" -gt 0 ] 2>/dev/null || continue
        set -- "$d/$n"*
        [ -e "$1" ] && continue
        echo "$n"
    done
}

# True when the first and the last MiB of the block device read as zeros:
# a new disk. Anything else (a partition table, a file system, md metadata
# of another array) is left alone.
is_blank() {
    dev=/dev/$1
    sectors=$(cat "/sys/class/block/$1/size" 2>/dev/null || echo 0)
    [ "$sectors" -ge 4096 ] || return 1
    nz=$(dd if="$dev" bs=1048576 count=1 2>/dev/null | tr -d '\000' | head -c 1 | wc -c)
    [ "$nz" -eq 0 ] || return 1
    last=$((sectors / 2048 - 1))
    nz=$(dd if="$dev" bs=1048576 skip="$last" count=1 2>/dev/null | tr -d '\000' | head -c 1 | wc -c)
    [ "$nz" -eq 0 ]
}
