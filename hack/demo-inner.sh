#!/usr/bin/env bash
# Runs inside the test environment (see hack/demo.sh): KUBECTL, VAULT_ADDR, AWS_ENDPOINT_URL...
set -euo pipefail
k() { "$KUBECTL" "$@"; }
bin=target/debug/secret-relay
log=$(mktemp)
trap 'rm -f "$log"' EXIT

if [ "${DEMO_POD:-}" = 1 ]; then
  echo "== helm install: the CRDs and the operator as two Pods on the node"
  "$HELM" install secret-relay charts/secret-relay -n secret-relay --create-namespace \
    --set image.repository=localhost/secret-relay --set image.tag=dev --set replicaCount=2 \
    --set logFormat=text \
    --set-string "extraEnv[0].name=KUBERNETES_SERVICE_HOST,extraEnv[0].value=$KUBE_APISERVER_HOST" \
    --set-string "extraEnv[1].name=KUBERNETES_SERVICE_PORT,extraEnv[1].value=$KUBE_APISERVER_PORT" \
    --wait --timeout 3m
  k -n secret-relay get pods -o wide
else
  echo "== CRDs"
  "$bin" crd | k apply --server-side -f - >/dev/null
fi
k wait --for=condition=Established crd --all --timeout=60s >/dev/null

echo "== remote values: SSM parameters (moto) and a Vault KV v2 secret (OpenBao)"
"$(dirname "$BAO")/python" - <<'PY'
import boto3, os
ssm = boto3.client("ssm", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
ssm.put_parameter(Name="/demo/app/db/password", Value="s3cr3t-demo", Type="SecureString", Overwrite=True)
ssm.put_parameter(Name="/demo/app/db/config", Value='{"username":"app","port":5432}', Type="String", Overwrite=True)
PY
BAO_ADDR=$VAULT_ADDR BAO_TOKEN=$VAULT_TOKEN "$BAO" kv put -mount=secret demo/app/api stripe-key=sk_demo_123 sendgrid-key=SG.demo >/dev/null

echo "== namespace, credentials and the examples' dev overlay"
k create namespace demo >/dev/null
k -n demo create secret generic aws-credentials --from-literal=access-key-id=testing --from-literal=secret-access-key=testing >/dev/null
k -n demo create secret generic vault-token --from-literal=token="$VAULT_TOKEN" >/dev/null
k kustomize examples/overlays/dev \
  | sed -e "s#http://127.0.0.1:5000#$AWS_ENDPOINT_URL#" -e "s#http://127.0.0.1:8200#$VAULT_ADDR#" \
  | k apply --server-side -f -

echo "== operator"
if [ "${DEMO_POD:-}" = 1 ]; then
  k -n demo wait --for=condition=Ready externalsecret --all --timeout=90s || {
    k -n secret-relay logs deploy/secret-relay --tail=30; exit 1; }
else
  "$bin" run --admin-addr 127.0.0.1:0 >"$log" 2>&1 &
  op=$!
  trap 'kill $op 2>/dev/null || true; rm -f "$log"' EXIT
  k -n demo wait --for=condition=Ready externalsecret --all --timeout=90s || { tail -n 30 "$log"; exit 1; }
fi

echo "== a failing ExternalSecret (the parameter does not exist)"
cat <<'YAML' | k apply --server-side -f -
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: broken, namespace: demo}
spec:
  secretStoreRef: {name: dev-ssm}
  data:
  - secretKey: password
    remoteRef: {key: /demo/does-not-exist}
YAML
k -n demo wait --for=jsonpath='{.status.conditions[0].reason}'=SecretSyncedError externalsecret/broken --timeout=60s >/dev/null

echo; echo "== kubectl get externalsecrets,secretstores -n demo"
k -n demo get externalsecrets,secretstores
echo; echo "== the Secrets (values decoded)"
for s in app-db app-api; do
  echo "--- $s"
  k -n demo get secret "$s" -o go-template='{{range $k, $v := .data}}{{$k}}={{$v | base64decode}}{{"\n"}}{{end}}'
  k -n demo get secret "$s" -o jsonpath='{.metadata.labels}{"\n"}{.metadata.annotations}{"\n"}'
done
echo; echo "== kubectl describe externalsecret dev-app-db"
k -n demo describe externalsecret dev-app-db
echo; echo "== kubectl describe externalsecret broken"
k -n demo describe externalsecret broken

echo; echo "== kubectl secret-relay status -A (the binary linked as kubectl-secret_relay on PATH)"
plugins=$(mktemp -d)
ln -s "$PWD/$bin" "$plugins/kubectl-secret_relay"
PATH="$plugins:$PATH" k secret-relay status -A || true
rm -rf "$plugins"
