#!/usr/bin/env bash
# Run the whole platform on this machine (`make run`): console + REST API, Celery worker and beat, the gateway
# and the local agent with a demo deployment. Ctrl-C stops everything, replicas included.
#
# Environment (all optional): WEB_PORT (8000), GATEWAY_PORT (8001), FRONTDOOR_LOCAL_AGENT_PORT (8002),
# FRONTDOOR_GATEWAY_METRICS_PORT (9464: the gateway's Prometheus listener, on 127.0.0.1),
# DATABASE_URL (postgres://postgres@127.0.0.1:5432/frontdoor), REDIS_URL (redis://127.0.0.1:6379/0),
# FRONTDOOR_DEMO_PASSWORD (else one is generated once and kept in var/demo-password),
# FRONTDOOR_RESYNC_SECONDS (5), READY_TIMEOUT (seconds to wait for the first completion, 120).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

export WEB_PORT="${WEB_PORT:-8000}"
export GATEWAY_PORT="${GATEWAY_PORT:-8001}"
export FRONTDOOR_LOCAL_AGENT_PORT="${FRONTDOOR_LOCAL_AGENT_PORT:-8002}"
export FRONTDOOR_GATEWAY_METRICS_PORT="${FRONTDOOR_GATEWAY_METRICS_PORT:-9464}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/frontdoor}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export FRONTDOOR_GATEWAY_URL="http://127.0.0.1:${GATEWAY_PORT}"
# The console's pages (its playground) may call the gateway from the browser: the gateway answers CORS for them only.
export FRONTDOOR_GATEWAY_CORS_ORIGINS="${FRONTDOOR_GATEWAY_CORS_ORIGINS:-http://127.0.0.1:${WEB_PORT},http://localhost:${WEB_PORT}}"
# The gateway forwards the Batch API's files and batches to the control plane's internal routes.
export FRONTDOOR_CONTROLPLANE_URL="http://127.0.0.1:${WEB_PORT}"
export FRONTDOOR_BACKEND="${FRONTDOOR_BACKEND:-local}"
export FRONTDOOR_LOCAL_STATE_DIR="${FRONTDOOR_LOCAL_STATE_DIR:-$ROOT/var/localagent}"
# A short resync for the one-machine demo: a replica that became ready shows up in the gateway within seconds
# even when no event triggers a reconcile (a no-op resync writes nothing, so this is cheap).
export FRONTDOOR_RESYNC_SECONDS="${FRONTDOOR_RESYNC_SECONDS:-5}"
export PYTHONUNBUFFERED=1
READY_TIMEOUT="${READY_TIMEOUT:-120}"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf '\033[31merror: %s\033[0m\n' "$*" >&2; exit 1; }

bash scripts/setup.sh
export PATH="$ROOT/.venv/bin:$PATH"
mkdir -p var

# The key that seals tenant secrets on their way to the gateway and the local agent: made once, kept in var/.
if [ -z "${FRONTDOOR_SEAL_KEY:-}${FRONTDOOR_SEAL_KEY_FILE:-}" ]; then
  [ -s var/seal.key ] || (umask 077 && python -m controlplane.contracts.sealing > var/seal.key)
  export FRONTDOOR_SEAL_KEY_FILE="$ROOT/var/seal.key"
fi

for port in "$WEB_PORT" "$GATEWAY_PORT" "$FRONTDOOR_LOCAL_AGENT_PORT" "$FRONTDOOR_GATEWAY_METRICS_PORT"; do
  if python -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)) != 0)"; then
    die "port $port is already in use (set WEB_PORT / GATEWAY_PORT / FRONTDOOR_LOCAL_AGENT_PORT / FRONTDOOR_GATEWAY_METRICS_PORT to free ones)"
  fi
done

say "checking Postgres and Redis"
python scripts/check_services.py || exit 1

say "migrating the database"
python manage.py migrate --noinput -v 0
python manage.py collectstatic --noinput -v 0

if [ -z "${FRONTDOOR_DEMO_PASSWORD:-}" ]; then
  if [ ! -s var/demo-password ]; then
    (umask 077 && python -c "import secrets; print(secrets.token_urlsafe(12))" > var/demo-password)
  fi
  FRONTDOOR_DEMO_PASSWORD="$(cat var/demo-password)"
  export FRONTDOOR_DEMO_PASSWORD
fi

say "seeding the demo tenant"
(umask 077 && python manage.py seed_demo --json 2>var/seed.log | tail -n 1 > var/demo.json) ||
  { cat var/seed.log >&2; die "seeding the demo tenant failed (log above)"; }
API_KEY="$(python -c "import json; print(json.load(open('var/demo.json'))['api_key'])")"
MODEL="$(python -c "import json; print(json.load(open('var/demo.json'))['model'])")"
V2_MODEL="$(python -c "import json; print(json.load(open('var/demo.json'))['v2_model'])")"
IMAGE_MODEL="$(python -c "import json; print(json.load(open('var/demo.json'))['image_model'] or '')")"

HONCHO_PID=""
cleanup() {
  trap - INT TERM EXIT
  if [ -n "$HONCHO_PID" ] && kill -0 "$HONCHO_PID" 2>/dev/null; then
    say "stopping"
    kill -TERM "$HONCHO_PID" 2>/dev/null || true
    wait "$HONCHO_PID" 2>/dev/null || true
  fi
  # Whatever the agent could not stop in time (or if it was killed): stop its replicas, identity-checked.
  python -m localagent --stop-all >/dev/null 2>&1 || true
}
trap cleanup INT TERM EXIT

say "starting web, worker, the snapshot publisher, the batch worker, beat, gateway and the local agent"
honcho -f Procfile start &
HONCHO_PID=$!

completion() {
  curl -sS -m 10 -o var/first-completion.json -w '%{http_code}' "http://127.0.0.1:${GATEWAY_PORT}/v1/chat/completions" \
    -H "Authorization: Bearer ${API_KEY}" -H "Content-Type: application/json" \
    -d "{\"model\": \"${MODEL}\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}]}" 2>/dev/null || true
}

deadline=$((SECONDS + READY_TIMEOUT))
status=""
until [ "$status" = "200" ]; do
  kill -0 "$HONCHO_PID" 2>/dev/null || die "a process exited during start-up; see the log above"
  [ "$SECONDS" -lt "$deadline" ] || die "no completion through the gateway after ${READY_TIMEOUT}s (last HTTP status: ${status:-none})"
  sleep 1
  status="$(completion)"
done

cat <<EOF

$(say "Frontdoor is running")
  console     http://127.0.0.1:${WEB_PORT}/
  API docs    http://127.0.0.1:${WEB_PORT}/api/docs/
  gateway     http://127.0.0.1:${GATEWAY_PORT}/v1
  metrics     http://127.0.0.1:${FRONTDOOR_GATEWAY_METRICS_PORT}/metrics
  admin       user admin, password ${FRONTDOOR_DEMO_PASSWORD}
  API key     ${API_KEY}

  Try it:
  curl http://127.0.0.1:${GATEWAY_PORT}/v1/chat/completions \\
    -H "Authorization: Bearer ${API_KEY}" -H "Content-Type: application/json" \\
    -d '{"model": "${MODEL}", "messages": [{"role": "user", "content": "Hello!"}]}'

  A batch through the Batch API with the official openai client (upload, create, wait, read the output):
  .venv/bin/python scripts/batch_example.py --base-url http://127.0.0.1:${GATEWAY_PORT}/v1 --api-key ${API_KEY} --model ${MODEL}

  The Open Inference Protocol (v2): ${V2_MODEL} scores (user, item) pairs (output "score", FP32):
  curl http://127.0.0.1:${GATEWAY_PORT}/v2/models/${V2_MODEL}/infer \\
    -H "Authorization: Bearer ${API_KEY}" -H "Content-Type: application/json" \\
    -d '{"inputs":[{"name":"user_id","shape":[2],"datatype":"INT64","data":[1,2]},{"name":"item_id","shape":[2],"datatype":"INT64","data":[10,20]}]}'

  The same with the official Triton client (pip install 'tritonclient[http]'), in Python:
  import numpy as np
  import tritonclient.http as httpclient
  client = httpclient.InferenceServerClient("127.0.0.1:${GATEWAY_PORT}")
  users, items = httpclient.InferInput("user_id", [2], "INT64"), httpclient.InferInput("item_id", [2], "INT64")
  users.set_data_from_numpy(np.array([1, 2], dtype=np.int64))
  items.set_data_from_numpy(np.array([10, 20], dtype=np.int64))
  result = client.infer("${V2_MODEL}", [users, items], headers={"Authorization": "Bearer ${API_KEY}"})
  print(result.as_numpy("score"))
EOF
if [ -n "$IMAGE_MODEL" ]; then
  cat <<EOF

  Images from ${IMAGE_MODEL} with the official openai client, in Python:
  import base64
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:${GATEWAY_PORT}/v1", api_key="${API_KEY}")
  image = client.images.generate(model="${IMAGE_MODEL}", prompt="a lighthouse at dusk", size="256x256", response_format="b64_json")
  open("lighthouse.png", "wb").write(base64.b64decode(image.data[0].b64_json))
EOF
fi
cat <<EOF

  Ctrl-C stops everything.
EOF

wait "$HONCHO_PID"
