# Sourced by the table scripts. Expects $cache (a folder) to be set; GATHER=1 measures nothing.
# field NAME: the field NAME of the JSON object on stdin (A.B: field B of the object A).
field() {
    python3 -c '
import functools, json, sys
print(functools.reduce(lambda o, k: o[k], sys.argv[1].split("."), json.load(sys.stdin)))' "$1"
}
# measure KEY CMD...: the test accuracy CMD prints as JSON (the field FIELD names, default
# test_accuracy), cached in $cache/KEY.
measure() {
    local key="$cache/$1"
    shift
    if [ ! -s "$key" ]; then
        [ -n "${GATHER:-}" ] && return 1
        if ! "$@" | field "${FIELD:-test_accuracy}" > "$key.tmp"; then
            echo "failed: $*" >&2
            return 1
        fi
        mv "$key.tmp" "$key"
    fi
    cat "$key"
}
