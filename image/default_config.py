"""The image's default indico.conf and logging.yaml, written at build time.

Indico's own `indico setup wizard` writes them; it only knows how to ask on a
terminal, so its questions are answered here in advance (SetupWizard's fields)
and its last step (`_setup`) writes the files. The answers are placeholders
marked CHANGE-ME: the result is deliberately unusable until an admin edits it
(`make-config` copies it to the data volume for that).

The wizard puts everything under one root; this image splits it over its
volumes (scratch: tmp, cache, log; data: etc, archive; web: static files), so the
directory settings are moved afterwards. If a future Indico writes them
differently, the build stops here rather than shipping a config that points
outside the volumes.

Usage (build time, in the venv): python default_config.py CONFIG_DIR WEB_DIR
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import indico.cli.setup as wizard_module
from indico.cli.setup import SetupWizard

INDICO_DIR = "/opt/indico"
# Where the image's volumes keep what the wizard would put under INDICO_DIR.
DIRECTORIES = {
    "CACHE_DIR": f"{INDICO_DIR}/scratch/cache",
    "TEMP_DIR": f"{INDICO_DIR}/scratch/tmp",
    "LOG_DIR": f"{INDICO_DIR}/scratch/log",
    "STORAGE_BACKENDS": {"default": f"fs:{INDICO_DIR}/data/archive"},
}
# The SECRET_KEY of a shared image would be every site's secret: make-config puts
# a fresh random key in place of this line.
SECRET_PLACEHOLDER = "SECRET_KEY = 'CHANGE-ME: make-config writes a fresh random key here'"

HEADER = """\
# indico.conf -- the Indico worker image's DEFAULT: NOT USABLE AS IS.
#
# `make-config` copied it here from the image (/opt/indico/default-config) and
# gave it a fresh SECRET_KEY. Before starting the worker, replace every value
# marked CHANGE-ME: at least BASE_URL, the database password in
# SQLALCHEMY_DATABASE_URI, the e-mail addresses and SMTP_SERVER.
# Host names indico-db and indico-redis are the linked containers' names.
#
# Keep CACHE_DIR, TEMP_DIR, LOG_DIR and STORAGE_BACKENDS: they are the image's
# volumes (/opt/indico/scratch and /opt/indico/data).
#
# Every setting: https://docs.getindico.io/en/stable/config/settings/
# Written by Indico {version}'s `indico setup wizard` at image build time.

"""

# Comments placed above the wizard's lines: what the admin must do with each.
NOTES = {
    "SQLALCHEMY_DATABASE_URI": "# CHANGE-ME: the indico role's password (and user, host, database if yours differ).",
    "BASE_URL": "# CHANGE-ME: the address users open (https://indico.example.org); Indico answers\n"
                "# only requests for this host name (others get 404).",
    "CELERY_BROKER": "# Redis in the indico-redis container: database 0 for celery, 1 for the cache.",
    "DEFAULT_TIMEZONE": "# Your instance's main time zone.",
    "SMTP_SERVER": "# CHANGE-ME: the mail relay Indico sends through, as (host, port).",
    "SUPPORT_EMAIL": "# CHANGE-ME: the three addresses below.",
}

# The worker speaks plain HTTP on port 8080 behind the web container (TLS ends
# there), so Indico must trust its X-Forwarded-For/-Proto/-Host headers.
PROXY_LINES = """
# The worker answers plain HTTP on port 8080 behind a web container (which ends
# TLS and sets X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host). Never
# publish port 8080 itself: with USE_PROXY those headers are trusted.
USE_PROXY = True
"""
# Indico sends every file it serves (attachments, its static files, generated scripts in
# the cache) by X-Accel-Redirect to the web container's nginx, which reads them from its
# read-only binds of the data and scratch directories and from the worker's published
# static files (the /.xsf/ locations of data/etc/nginx.conf), as Indico's guide has it.
# A path outside this mapping is an error 500: a plugin whose static files Indico serves
# needs its directory mapped here and a location in nginx.conf.
XACCEL_LINES = """
STATIC_FILE_METHOD = ('xaccelredirect', {{
    '/opt/indico/data': '/.xsf/data',
    '/opt/indico/scratch': '/.xsf/scratch',
    '{static}': '/.xsf/static',
}})
"""


def answers(wizard: SetupWizard, config_dir: str) -> None:
    wizard.root_path = wizard.data_root_path = INDICO_DIR
    # Paths as Path objects: Indico 3.3 writes with Path.write_text, 3.2 takes either.
    wizard.config_dir_path = Path(config_dir)
    wizard.config_path = Path(config_dir, "indico.conf")
    wizard.indico_url = "https://indico.CHANGE-ME.example"
    wizard.db_uri = "postgresql://indico:CHANGE-ME-password@indico-db/indico"
    wizard.redis_uri_celery = "redis://indico-redis:6379/0"
    wizard.redis_uri_cache = "redis://indico-redis:6379/1"
    wizard.contact_email = "indico-contact@CHANGE-ME.example"
    wizard.admin_email = "indico-admin@CHANGE-ME.example"
    wizard.noreply_email = "noreply@CHANGE-ME.example"
    wizard.smtp_host, wizard.smtp_port = "CHANGE-ME-smtp-host", 25
    wizard.smtp_user = wizard.smtp_password = None
    wizard.default_locale = "en_GB"
    wizard.default_timezone = "UTC"
    wizard.rb_active = False
    wizard.system_notices = True
    wizard.public_user_search = True  # asked by Indico 3.3 (True writes nothing); unknown to 3.2


def relocate(text: str) -> str:
    for key, value in DIRECTORIES.items():
        text, count = re.subn(rf"^{key} = .*$", lambda _: f"{key} = {value!r}", text, flags=re.M)
        if count != 1:
            sys.exit(f"default_config.py: the wizard wrote {count} {key} lines (expected 1); "
                     "this Indico version needs the image's default config updated")
    text, count = re.subn(r"^SECRET_KEY = .*$", lambda _: SECRET_PLACEHOLDER, text, flags=re.M)
    if count != 1:
        sys.exit("default_config.py: the wizard wrote no SECRET_KEY line")
    for key, note in NOTES.items():
        text = re.sub(rf"^({key} = )", lambda m: f"{note}\n{m.group(1)}", text, count=1, flags=re.M)
    # The static files uwsgi serves: the package's own directory, whatever the Python version.
    static = os.path.join(os.path.dirname(wizard_module.indico.__file__), "web", "static")
    return (HEADER.format(version=wizard_module.indico.__version__) + text + PROXY_LINES
            + XACCEL_LINES.format(static=static))


def main(config_dir: str, web_dir: str) -> None:
    os.makedirs(config_dir)
    os.makedirs(web_dir, exist_ok=True)
    # The wizard's only question inside _setup: a ~/.indico.conf symlink. INDICO_CONFIG does that job.
    wizard_module._confirm = lambda *args, **kwargs: False
    wizard = SetupWizard()
    answers(wizard, config_dir)
    wizard._setup(dev=False)

    conf = os.path.join(config_dir, "indico.conf")
    with open(conf) as f:
        text = relocate(f.read())
    with open(conf, "w") as f:
        f.write(text)

    # The wizard links web/static into the venv; a web container sharing the
    # volume cannot follow that link, so it gets the files themselves.
    static = os.path.join(web_dir, "static")
    if os.path.islink(static):
        target = os.path.realpath(static)
        os.unlink(static)
        shutil.copytree(target, static)
    # uwsgi loads Indico from here: outside the volumes, so always this version's.
    shutil.copy(os.path.join(web_dir, "indico.wsgi"), os.path.join(INDICO_DIR, "indico.wsgi"))
    for name in ("indico.conf", "logging.yaml"):
        if not os.path.isfile(os.path.join(config_dir, name)):
            sys.exit(f"default_config.py: the wizard wrote no {name}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
