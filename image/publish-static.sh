#!/bin/sh
# indico-publish-static: hands this image's static files (css, dist, images, fonts) to the
# web container, through the named volume mounted at $INDICO_DIR/assets. Run by the
# entrypoint before uwsgi starts, so no page of this worker is served before its assets.
#
# The volume holds one directory per static tree, named by a fingerprint of its files,
# and two symlinks the web container's nginx tries in turn: `current` (this worker's) and
# `previous` (the worker before it, whose pages may still be open in browsers, or still
# served while it stops). Each symlink is switched by rename(2), so nginx never sees a
# missing one; an unchanged image publishes nothing. Every other tree is removed.
#
# Without a volume mounted there, nothing is done: a worker with no web container in
# front of it serves its static files itself, through uwsgi, as before.
set -eu
INDICO_DIR=${INDICO_DIR:-/opt/indico}
ASSETS=$INDICO_DIR/assets

if ! awk -v dir="$ASSETS" '$5 == dir { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    exit 0
fi
fail() {
    echo "indico-worker: $*" >&2
    exit 2
}
# The tree uwsgi itself serves and Indico's pages are rendered against (its webpack
# manifest), not a copy: what the web serves is what this worker references.
set -- "$INDICO_DIR"/.venv/lib/python3*/site-packages/indico/web/static
[ -d "$1" ] || fail "no Indico static directory in this image (looked for $1)"
static=$1
if [ ! -w "$ASSETS" ] || [ ! -x "$ASSETS" ]; then
    fail "$ASSETS is not writable by UID:GID $(id -u):$(id -g) (it is $(stat -c '%u:%g mode %a' "$ASSETS")):" \
         "the worker cannot publish its static files for the web container. A named volume made by the" \
         "engine takes the image's mode (1777); one made otherwise needs: docker run --rm -v VOLUME:/v" \
         "debian chmod 1777 /v (or chown it to the worker's UID:GID)."
fi
# The volume is sticky (mode 1777): links and trees another UID made cannot be replaced.
for link in current previous; do
    if [ -L "$ASSETS/$link" ] && [ "$(stat -c %u "$ASSETS/$link")" != "$(id -u)" ]; then
        fail "$ASSETS/$link belongs to UID $(stat -c %u "$ASSETS/$link"), not to this worker's $(id -u)" \
             "(the site's user changed?): the worker cannot replace it. Give the volume to the new user:" \
             "docker run --rm -v VOLUME:/v debian chown -hR $(id -u):$(id -g) /v (the site's is indico-assets)."
    fi
done

# Path, size and modification time of every file: cheap (no file is read), the same for
# the same image at every start, different after any rebuild that touches a file.
version=$(cd "$static" && find . -type f -printf '%P %s %T@\n' | LC_ALL=C sort | sha256sum | cut -c1-16)
# Public files: readable by whatever user the web container's nginx runs as.
umask 022
if [ ! -d "$ASSETS/$version" ]; then
    incoming=$ASSETS/.incoming-$version-$$
    rm -rf "$incoming"
    cp -R "$static" "$incoming"
    mv -T "$incoming" "$ASSETS/$version"
    echo "indico-worker: published static files $version to $ASSETS"
fi
current=$(readlink "$ASSETS/current" 2>/dev/null || true)
if [ "$current" != "$version" ]; then
    if [ -n "$current" ] && [ -d "$ASSETS/$current" ]; then
        ln -s "$current" "$ASSETS/.previous-$$"
        mv -T "$ASSETS/.previous-$$" "$ASSETS/previous"
    fi
    ln -s "$version" "$ASSETS/.current-$$"
    mv -T "$ASSETS/.current-$$" "$ASSETS/current"
    echo "indico-worker: static files switched to $version (previous: ${current:-none})"
fi
previous=$(readlink "$ASSETS/previous" 2>/dev/null || true)
# One worker per host publishes here, so any copy still incoming was left by a start that died.
for tree in "$ASSETS"/.incoming-*; do
    [ -d "$tree" ] && rm -rf "$tree" && echo "indico-worker: removed the unfinished copy ${tree##*/}"
done
for tree in "$ASSETS"/*; do
    name=${tree##*/}
    case "$name" in
        current|previous|"$version"|"$previous") ;;
        *) [ -d "$tree" ] && [ ! -L "$tree" ] && rm -rf "$tree" && echo "indico-worker: removed static files $name" ;;
    esac
done
exit 0
