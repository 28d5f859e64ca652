# Sourced by the table scripts. Expects $cache (a folder) to be set; GATHER=1 measures nothing.
# field NAME: the field NAME of the JSON object on stdin.
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
# measure KEY CMD...: the test accuracy CMD prints as JSON, cached in $cache/KEY.
measure() {
    local key="$cache/$1"
    shift
    if [ ! -s "$key" ]; then
        [ -n "${GATHER:-}" ] && return 1
        if ! "$@" | field test_accuracy > "$key.tmp"; then
            echo "failed: $*" >&2
            return 1
        fi
        mv "$key.tmp" "$key"
    fi
    cat "$key"
}
