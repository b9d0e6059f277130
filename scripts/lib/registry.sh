# SPDX-License-Identifier: Apache-2.0
# Debian's docker-registry on a free port of 127.0.0.1, for scripts/demo.sh and bench/*.sh (sourced; bash).
#
#   registry_free_port   print a free TCP port on 127.0.0.1
#   registry_start DIR   start it: storage DIR/storage, configuration DIR/config.yml, log DIR/registry.log;
#                        sets REG_PORT and REG_PID (the caller stops it: kill "$REG_PID"). Polls /v2/ until it
#                        answers (no fixed sleep); tries another port if the chosen one was taken meanwhile.
#                        On failure prints the registry's log and returns 1.
# Needs python3, curl and /usr/bin/docker-registry.

registry_free_port() {
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

registry_start() {
        local dir=$1 attempt deadline k
        mkdir -p "$dir/storage"
        for attempt in 1 2 3 4 5; do
                REG_PORT=$(registry_free_port)
                cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REG_PORT
  secret: $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
health:
  storagedriver:
    enabled: false
EOF
                # REGISTRY_* variables would override the file: drop any from the registry's environment.
                local unset_args=()
                while IFS='=' read -r k _; do
                        if [[ $k == REGISTRY_* ]]; then unset_args+=(-u "$k"); fi
                done < <(env)
                env "${unset_args[@]}" /usr/bin/docker-registry serve "$dir/config.yml" \
                        >"$dir/registry.log" 2>&1 </dev/null &
                REG_PID=$!
                deadline=$((SECONDS + 30))
                while [ $SECONDS -lt $deadline ] && kill -0 "$REG_PID" 2>/dev/null; do
                        if curl -fsS -o /dev/null --connect-timeout 1 --max-time 2 \
                                "http://127.0.0.1:$REG_PORT/v2/" 2>/dev/null; then
                                return 0
                        fi
                        sleep 0.05
                done
                kill "$REG_PID" 2>/dev/null || true
                wait "$REG_PID" 2>/dev/null || true
                REG_PID=""
                # A port taken between choosing and binding: try another; anything else is fatal.
                grep -q "address already in use" "$dir/registry.log" || break
                echo "registry: port $REG_PORT was taken, retrying ($attempt)" >&2
        done
        cat "$dir/registry.log" >&2 || true
        return 1
}
