#!/bin/sh
# The Indico worker image's entrypoint: checks what every start needs, creates
# the volumes' directories, then `exec`s the one program its arguments name, so
# that program is PID 1 and gets the container's stop signal itself (with the
# INDICO_SUPERVISOR_LEASE_* variables: the lease guard is PID 1, the program its child).
#
#   run [UWSGI-OPTION...]   (or no argument) uwsgi with /opt/indico/uwsgi.ini
#   celery [OPTION...]      the celery worker with beat: indico celery worker -B
#   make-config             copy the default indico.conf and logging.yaml to data/etc
#   indico ARG...           an indico command (indico db prepare, indico shell, ...)
#   PROGRAM ARG...          any other program of the image (indico-health, sh, ...)
#   SUBCOMMAND ARG...       a word that is no program: an indico subcommand (db prepare)
set -eu
# indico.conf holds SECRET_KEY and the database password, and the data volume is
# shared between hosts: whatever this start writes (and uwsgi and celery after it,
# as Indico's guide has uwsgi do) is the container user's and its group's only.
umask 027

INDICO_DIR=${INDICO_DIR:-/opt/indico}
DATA=$INDICO_DIR/data
SCRATCH=$INDICO_DIR/scratch
CONF_DIR=$DATA/etc
DEFAULTS=$INDICO_DIR/default-config

fail() {
    echo "indico-worker: $*" >&2
    exit 2
}

what=${1:-run}
uid=$(id -u)
gid=$(id -g)
# Files written as root into bound host directories, and Indico itself as root,
# are what --user exists to prevent; a bare --user UID leaves GID 0.
if [ "$uid" = 0 ] || [ "$gid" = 0 ]; then
    fail "refusing to run '$what' as root (UID $uid, GID $gid). Start the container with" \
         "--user UID:GID, both numeric and non-zero: the owner of the host directories bound to" \
         "$DATA and $SCRATCH (e.g. --user \"\$(id -u indico):\$(id -g indico)\")."
fi

# Celery refuses to run (it "assumes root") when its GID has no group entry, and
# other tools want a user name; --user may give any UID:GID. nss_wrapper lends
# them entries from files this start writes, without making /etc writable.
if ! getent passwd "$uid" >/dev/null || ! getent group "$gid" >/dev/null; then
    nss=$(mktemp -d /tmp/indico-nss.XXXXXX)
    cp /etc/passwd "$nss/passwd"
    cp /etc/group "$nss/group"
    getent passwd "$uid" >/dev/null || echo "indico:x:$uid:$gid:Indico:${HOME:-/opt/indico/scratch/tmp}:/bin/sh" >> "$nss/passwd"
    getent group "$gid" >/dev/null || echo "indico:x:$gid:" >> "$nss/group"
    export LD_PRELOAD=libnss_wrapper.so NSS_WRAPPER_PASSWD="$nss/passwd" NSS_WRAPPER_GROUP="$nss/group"
fi

writable() {  # the volume's directory, or a clear word on whose it must be
    if [ ! -w "$1" ] || [ ! -x "$1" ]; then
        fail "$1 is not writable by UID:GID $uid:$gid (it is $(stat -c '%u:%g mode %a' "$1")). The host" \
             "directory bound there must belong to the container's user: chown $uid:$gid HOST-DIRECTORY," \
             "or start the container with the --user of its owner."
    fi
}

# Created here, as the container's user, so they belong to it on the host too.
writable "$DATA"
writable "$SCRATCH"
mkdir -p "$CONF_DIR" "$DATA/archive" "$SCRATCH/tmp" "$SCRATCH/cache" "$SCRATCH/log"

# Made by an image without this umask, or loosened by hand: said at every start,
# never changed here (an admin may have a reason, e.g. a group that reads the archive).
too_wide() {  # VOLUME PATH MASK WHY: a warning with the exact chmod if VOLUME/PATH has a bit of MASK
    [ -e "$1/$2" ] || return 0
    mode=$(stat -L -c %a "$1/$2")
    [ $((0$mode & $3)) -ne 0 ] || return 0
    fix=$(printf %o $((0$mode & ~$3)))
    echo "indico-worker: warning: $1/$2 is mode $mode: $4. Fix: chmod $fix $1/$2 (from the host:" \
         "indico-supervisor exec -- chmod $fix $1/$2; or in the host directory bound to $1: chmod $fix $2)." \
         "Left as it is." >&2
}
too_wide "$DATA" etc 027 "others can enter it or its group can write it, and it holds indico.conf"
too_wide "$DATA" etc/indico.conf 027 "others can read it or its group can write it, and it holds SECRET_KEY and the database password"
too_wide "$DATA" etc/logging.yaml 027 "others can read it or its group can write it"
too_wide "$DATA" archive 022 "its group or others can write it"
for dir in tmp cache log; do too_wide "$SCRATCH" $dir 022 "its group or others can write it"; done

if [ "$what" = make-config ]; then
    [ $# -le 1 ] || fail "make-config takes no arguments (got: $*)"
    existing=""
    for name in indico.conf logging.yaml nginx.conf; do
        if [ -e "$CONF_DIR/$name" ] || [ -L "$CONF_DIR/$name" ]; then
            existing="$existing $CONF_DIR/$name"
        fi
    done
    if [ -n "$existing" ]; then
        fail "make-config: already there:$existing. Nothing was changed. Edit the existing files," \
             "or move them away to start again from the image's defaults."
    fi
    secret=$(python -c 'import secrets; print(secrets.token_hex(32))')
    # noclobber: a concurrent make-config cannot overwrite what another just wrote.
    set -C
    sed "s/^SECRET_KEY = .*/SECRET_KEY = '$secret'/" "$DEFAULTS/indico.conf" > "$CONF_DIR/indico.conf"
    cat "$DEFAULTS/logging.yaml" > "$CONF_DIR/logging.yaml"
    cat "$DEFAULTS/nginx.conf" > "$CONF_DIR/nginx.conf"
    set +C
    echo "indico-worker: created $CONF_DIR/indico.conf (with a fresh SECRET_KEY), $CONF_DIR/logging.yaml"
    echo "indico-worker: and $CONF_DIR/nginx.conf (the web container's; set its server_name)."
    echo "indico-worker: indico.conf is NOT usable yet: replace every CHANGE-ME in it (BASE_URL, the database"
    echo "indico-worker: password, e-mail addresses, SMTP server), then run 'indico db prepare' once."
    exit 0
fi

if [ ! -f "$CONF_DIR/indico.conf" ]; then
    fail "no $CONF_DIR/indico.conf (host: the directory bound to $DATA, then etc/indico.conf)." \
         "Create it first with the 'make-config' argument, e.g.:" \
         "docker run --rm --user $uid:$gid --volume HOST-DATA-DIR:$DATA IMAGE make-config" \
         "(or: indico-supervisor exec -- make-config), then edit it."
fi

# A singleton role (one celery for the whole cluster): the daemon holding the site's
# lease passes it in the environment, and the program runs as the child of the guard,
# which stays PID 1, renews the lease and kills the program as soon as the lease may
# be another host's (see lease_guard.py). Without the lease variables: a plain exec.
guard=
if [ -n "${INDICO_SUPERVISOR_LEASE_KEY:-}" ]; then
    guard=indico-lease-guard
fi

case "$what" in
    run)
        [ $# -eq 0 ] || shift
        # The web container's static files, before the first page that references them.
        indico-publish-static
        exec $guard uwsgi --ini "$INDICO_DIR/uwsgi.ini" "$@"
        ;;
    celery)
        shift
        exec $guard indico celery worker -B "$@"
        ;;
    indico)
        exec $guard "$@"
        ;;
    *)
        if command -v "$what" >/dev/null 2>&1; then
            exec $guard "$@"
        fi
        exec $guard indico "$@"
        ;;
esac
