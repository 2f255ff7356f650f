#!/usr/bin/env bash
# Walks the real consent flow with curl, as a customer and a partner would, and prints the
# token response (JSON). Used by the load benchmark to get a token without any back door.
# Usage: consent-flow.sh BASE_URL CLIENT_ID CLIENT_SECRET REDIRECT_URI EMAIL PASSWORD "SCOPES" [DPOP_PROOF]
#   DPOP_PROOF: sent as the token request's `DPoP` header, so the tokens are bound to its key
#   (RFC 9449; a proof for POST BASE_URL/oauth/token, e.g. from examples/dpop_proofs.rs).
set -euo pipefail
base=$1 client_id=$2 secret=$3 redirect=$4 email=$5 password=$6 scopes=$7 dpop=${8:-}
jar=$(mktemp); trap 'rm -f "$jar"' EXIT
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
verifier=$(head -c 32 /dev/urandom | b64url)
challenge=$(printf '%s' "$verifier" | openssl dgst -sha256 -binary | b64url)
hidden() { sed -n "s/.*name=\"$1\" value=\"\([^\"]*\)\".*/\1/p" | head -n 1; }
authorize="$base/oauth/authorize?response_type=code&client_id=$client_id&redirect_uri=$(printf '%s' "$redirect" | jq -sRr @uri)&scope=$(printf '%s' "$scopes" | jq -sRr @uri)&state=bench&code_challenge=$challenge&code_challenge_method=S256"

login=$(curl -sf -c "$jar" -b "$jar" "$authorize")
csrf=$(printf '%s' "$login" | hidden csrf_token)
next=$(printf '%s' "$login" | hidden next | sed 's/&amp;/\&/g')
curl -sf -o /dev/null -c "$jar" -b "$jar" --data-urlencode "email=$email" \
  --data-urlencode "password=$password" --data-urlencode "csrf_token=$csrf" \
  --data-urlencode "next=$next" "$base/portal/login"
consent=$(curl -sf -c "$jar" -b "$jar" "$authorize")
consent_id=$(printf '%s' "$consent" | hidden consent_id)
csrf=$(printf '%s' "$consent" | hidden csrf_token)
fields=()
for f in $scopes; do fields+=(--data-urlencode "field=$f"); done
location=$(curl -s -o /dev/null -w '%{redirect_url}' -c "$jar" -b "$jar" \
  --data-urlencode "consent_id=$consent_id" --data-urlencode "csrf_token=$csrf" \
  --data-urlencode "decision=allow" "${fields[@]}" "$base/oauth/authorize")
code=$(printf '%s' "$location" | sed -n 's/.*[?&]code=\([^&]*\).*/\1/p')
[ -n "$code" ] || { echo "consent failed: $location" >&2; exit 1; }
curl -sf -u "$client_id:$secret" ${dpop:+-H "DPoP: $dpop"} -d grant_type=authorization_code --data-urlencode "code=$code" \
  --data-urlencode "redirect_uri=$redirect" -d "code_verifier=$verifier" "$base/oauth/token"
