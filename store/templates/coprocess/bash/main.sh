#!/usr/bin/env bash
# A csext extension in bash for the coprocess runtime (spec.runtime: coprocess).
#
# Edit handle() below; leave the protocol part alone. The same file also runs in the exec
# runtime (CloudStack's `<entrypoint> <action> <payload-file> <timeout>`), so it can be tried
# by hand:  ./main.sh status tests/payload.json 10
# Protocol reference: docs/coprocess.md in csext.

# handle ACTION PAYLOAD: PAYLOAD is the JSON input as text. Print the result on stdout,
# diagnostics on stderr, and `return` the exit code (0 = success). In coprocess mode this
# runs inside the long-lived shell: use `return`, not `exit` (exit ends the process; csext
# fails that request and starts a new one), and do not leave variables or `cd` behind.
handle() {
    local action=$1 payload=$2
    case $action in
        status)
            printf '{"status":"success","message":"ok"}\n'
            ;;
        *)
            printf '{"status":"success","action":"%s","payload_bytes":%d}\n' \
                "$action" "${#payload}"
            ;;
    esac
}

# ---- protocol (no need to edit below) ---------------------------------------------------

if [[ ${1-} != --coprocess ]]; then # exec runtime: run once
    handle "$1" "$(<"$2")"
    exit
fi

# JSON-escape $1 into REPLY, without forking.
_json_escape() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    s=${s//[$'\x01'-$'\x08'$'\x0b'$'\x0c'$'\x0e'-$'\x1f']/} # other control bytes: dropped
    REPLY=$s
}

# fd 4 reads requests, fd 3 writes responses; commands get /dev/null as stdin and anything
# written to the real stdout outside handle() ends up on stderr, not in the protocol.
exec 4<&0 3>&1 0</dev/null 1>&2
_dir=$(mktemp -d "${TMPDIR:-/tmp}/csext-coprocess.XXXXXX") || exit 1
trap 'rm -rf -- "$_dir"' EXIT
_re='^\{"id":"([^"]*)","action":"(([^"\\]|\\.)*)"'
while IFS= read -r _line <&4; do
    if ! [[ $_line =~ $_re ]]; then
        printf 'bad request line: %.100s\n' "$_line" >&2
        exit 2
    fi
    _id=${BASH_REMATCH[1]}
    _action=${BASH_REMATCH[2]}
    _payload=${_line#*,\"payload\":} # "payload" is always the last field
    _payload=${_payload%\}}
    handle "$_action" "$_payload" >"$_dir/out" 2>"$_dir/err"
    _code=$?
    IFS= read -r -d '' _out <"$_dir/out"
    IFS= read -r -d '' _err <"$_dir/err"
    _json_escape "$_out"
    _out=$REPLY
    _json_escape "$_err"
    printf '{"id":"%s","exit_code":%d,"stdout":"%s","stderr":"%s"}\n' \
        "$_id" "$_code" "$_out" "$REPLY" >&3
done
