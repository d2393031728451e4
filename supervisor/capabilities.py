"""Linux capability names for a container's `cap_add`, checked before the engine sees them.

Containers are created with every capability dropped (see `spec`); the rare role
that needs one names it. A misspelt name would only fail at create time, role by
role, so it is refused with the file's other problems instead.
"""
from __future__ import annotations

from .schema import Reader, key_path

# capabilities(7), Linux 5.9+; the engine refuses a name its kernel lacks, at create time.
KNOWN = frozenset("""
    CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
    NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO
    SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG
    MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM
    BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE
""".split())


def read_cap_add(reader: Reader, node: object, path: str) -> tuple[str, ...] | None:
    """`[NET_BIND_SERVICE, …]` (a `CAP_` prefix and any case accepted) as sorted `CAP_…` names."""
    names = reader.string_list(node, path, hint="a list of capability names, e.g. [NET_BIND_SERVICE]")
    if names is None:
        return None
    found, good = set(), True
    for index, name in enumerate(names):
        bare = name.strip().upper().removeprefix("CAP_")
        if bare == "ALL":
            reader.problem(key_path(path, index), "ALL would undo the capability drop; name the few this "
                                                  "container needs, or set allow_root: true if it really needs root",
                           name)
            good = False
        elif bare not in KNOWN:
            reader.problem(key_path(path, index), "not a Linux capability; expected a name such as "
                                                  "NET_BIND_SERVICE or CAP_NET_BIND_SERVICE (see capabilities(7))", name)
            good = False
        else:
            found.add("CAP_" + bare)
    return tuple(sorted(found)) if good else None
