# Sourced by the script tests (tests/scripts/test_*.sh): a temporary folder $TMP removed on
# exit, a failure count $fails, and `check DESCRIPTION COMMAND...`, which runs the command and
# prints ok or FAIL for it.
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
check() {  # description, then a command that must succeed
  local what=$1
  shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fails=$((fails + 1)); fi
}
