"""What the guest's kernel says, read over the command port (ttyS1): md
array state from sysfs, disks by serial number, single values. md_state
reads with shell built-ins (`read`, `echo`: no process per attribute)."""

# The health watch reads the appliance configuration the supervisor started
# mxrack with; the CLI needs it too.
MXRACK = "mxrack --config /run/mxrack/mxrack.toml"


def md_state(shell, md="md0"):
    """{'sync_action': ..., 'degraded': ..., 'array_state': ...,
    'members': {'sda': 'in_sync', 'sdc': 'spare', ...}} from
    /sys/block/MD/md/; members as md names them (dev-sda -> sda)."""
    script = (
        f"cd /sys/block/{md}/md && {{ "
        "for f in sync_action degraded array_state; do read -r v <$f; echo \"$f=$v\"; done; "
        "for d in dev-*; do [ -e \"$d/state\" ] && read -r v <\"$d/state\" && echo \"$d=$v\"; done; "
        "cd /; }"
    )
    _, out = shell.run(script, timeout=60)
    state = {"members": {}}
    for line in out.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep:
            continue
        if key.startswith("dev-"):
            state["members"][key[len("dev-"):]] = value
        else:
            state[key] = value
    return state


def roles(state):
    """(members in sync, idle spares, others) of an md_state()."""
    in_sync = sorted(d for d, s in state["members"].items() if "in_sync" in s.split(","))
    spares = sorted(d for d, s in state["members"].items() if s == "spare")
    other = sorted(d for d in state["members"] if d not in in_sync and d not in spares)
    return in_sync, spares, other


def redundant(state, spares=1):
    """True when the array is idle, not degraded, 2 members in sync and
    `spares` idle spares, nothing else."""
    in_sync, spare, other = roles(state)
    return (
        state.get("sync_action") == "idle"
        and state.get("degraded") == "0"
        and len(in_sync) == 2
        and len(spare) == spares
        and not other
    )


def describe(state):
    in_sync, spares, other = roles(state)
    return (
        f"sync_action={state.get('sync_action')} degraded={state.get('degraded')} "
        f"in_sync={in_sync} spares={spares} other={ {d: state['members'][d] for d in other} }"
    )


def disks(shell):
    """{serial: kernel name} of the SCSI disks the guest sees (serial from
    VPD page 0x80, as the start-up scripts read it)."""
    script = (
        ". /usr/libexec/mxrack/lib.sh; "
        'for d in /sys/block/sd*; do [ -e "$d/device" ] || continue; '
        'n=${d##*/}; echo "disk $n $(disk_serial "$n")"; done'
    )
    _, out = shell.run(script, timeout=60)
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "disk":
            found[parts[2]] = parts[1]
    return found


def read_value(shell, path):
    """A sysfs/procfs value. With cat: a sysctl file under /proc/sys ends
    at the first partial read, and the shell's `read` reads byte by byte."""
    _, out = shell.run(f"cat {path}", timeout=60)
    return out.strip()
