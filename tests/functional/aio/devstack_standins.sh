# shellcheck shell=bash
# Tiny stand-ins for the devstack functions plugin.sh uses, so its phases can
# run against scratch config files.  iniset/iniget/inidelete keep devstack's
# calling conventions (file section option [value]); the file is parsed and
# rewritten with Python's configparser.  Calls are logged to $STANDIN_LOG.

_ini() {
    python3 - "$@" <<'PY'
import configparser, sys
action, path, section, option = sys.argv[1:5]
cp = configparser.RawConfigParser(interpolation=None, strict=False)
cp.optionxform = str
cp.read(path)
if action == 'get':
    if cp.has_option(section, option):
        print(cp.get(section, option))
    sys.exit(0)
if action == 'set':
    if section != 'DEFAULT' and not cp.has_section(section):
        cp.add_section(section)
    cp.set(section, option, sys.argv[5])
elif action == 'delete':
    if section == 'DEFAULT' or cp.has_section(section):
        cp.remove_option(section, option)
with open(path, 'w') as f:
    cp.write(f)
PY
}

iniset() { echo "iniset $*" >> "$STANDIN_LOG"; _ini set "$1" "$2" "$3" "$4"; }
iniget() { _ini get "$1" "$2" "$3"; }
inidelete() { echo "inidelete $*" >> "$STANDIN_LOG"; _ini delete "$1" "$2" "$3"; }
pip_install() { echo "pip_install $*" >> "$STANDIN_LOG"; }
pip_uninstall() { echo "pip_uninstall $*" >> "$STANDIN_LOG"; }
echo_summary() { echo "summary: $*" >> "$STANDIN_LOG"; }
die() { shift; echo "die: $*" >&2; exit 1; }
