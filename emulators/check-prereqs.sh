#!/usr/bin/env bash
# Check the machine prerequisites of the Cascade local stack. Prints one "ok" line per prerequisite
# found and, for each missing one, the exact commands that install it. Exit status 1 if anything is
# missing. Writes nothing outside a temporary directory (gcloud gets a throwaway CLOUDSDK_CONFIG).
set -u

missing=0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo "; fi
CODENAME="$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") )"
CODENAME="${CODENAME:-bookworm}"

ok() { printf 'ok       %s\n' "$*"; }
need() {  # need WHAT, then the install commands on stdin
  missing=1
  printf 'MISSING  %s\n  install with:\n' "$1"
  sed 's/^/    /'
}

# --- python3.11 ---------------------------------------------------------------
if command -v python3.11 >/dev/null 2>&1; then
  ok "python3.11: $(python3.11 --version 2>&1) at $(command -v python3.11)"
else
  need "python3.11 (on PATH)" <<INSTALL
${SUDO}apt-get update && ${SUDO}apt-get install -y python3.11 python3.11-venv
# or, with pyenv:  pyenv install 3.11 && pyenv global 3.11
INSTALL
fi

# --- java >= 11 (Pub/Sub and Firestore emulators) -------------------------------
java_major=0
if command -v java >/dev/null 2>&1; then
  java_version="$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)"
  case "$java_version" in
    1.*) java_major="$(echo "$java_version" | cut -d. -f2)" ;;
    *)   java_major="$(echo "$java_version" | cut -d. -f1 | tr -cd '0-9')" ;;
  esac
fi
if [ "${java_major:-0}" -ge 11 ] 2>/dev/null; then
  ok "java ${java_version} at $(command -v java)"
else
  need "java >= 11 (found: ${java_version:-none})" <<INSTALL
${SUDO}apt-get update && ${SUDO}apt-get install -y openjdk-17-jre-headless
INSTALL
fi

# --- gcloud + emulator components ---------------------------------------------
if command -v gcloud >/dev/null 2>&1; then
  tmpcfg="$(mktemp -d)"
  sdk="$(CLOUDSDK_CONFIG="$tmpcfg" gcloud info --format='value(installation.sdk_root)' 2>/dev/null)"
  rm -rf "$tmpcfg"
  sdk="${sdk:-/usr/lib/google-cloud-sdk}"
  ok "gcloud at $(command -v gcloud) (SDK root ${sdk})"
  for comp in pubsub-emulator cloud-firestore-emulator; do
    case "$comp" in
      pubsub-emulator) exe="$sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"; pkg=google-cloud-cli-pubsub-emulator ;;
      *)               exe="$sdk/platform/cloud-firestore-emulator/cloud_firestore_emulator"; pkg=google-cloud-cli-firestore-emulator ;;
    esac
    if [ -x "$exe" ]; then
      ok "gcloud component ${comp} (${exe})"
    elif [ "$sdk" = /usr/lib/google-cloud-sdk ]; then  # apt-installed SDK: component manager is disabled
      need "gcloud component ${comp}" <<INSTALL
${SUDO}apt-get update && ${SUDO}apt-get install -y ${pkg}
INSTALL
    else
      need "gcloud component ${comp}" <<INSTALL
gcloud components install ${comp}
INSTALL
    fi
  done
else
  need "gcloud (Google Cloud CLI) with the pubsub-emulator and cloud-firestore-emulator components" <<INSTALL
${SUDO}apt-get update && ${SUDO}apt-get install -y apt-transport-https ca-certificates gnupg curl
curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | ${SUDO}gpg --dearmor -o /usr/share/keyrings/cloud.google.gpg
echo "deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt cloud-sdk main" | ${SUDO}tee /etc/apt/sources.list.d/google-cloud-sdk.list
${SUDO}apt-get update && ${SUDO}apt-get install -y google-cloud-cli google-cloud-cli-pubsub-emulator google-cloud-cli-firestore-emulator
INSTALL
fi

# --- terraform ------------------------------------------------------------------
if command -v terraform >/dev/null 2>&1; then
  ok "terraform: $(terraform version 2>/dev/null | head -n1) at $(command -v terraform)"
else
  need "terraform" <<INSTALL
${SUDO}apt-get update && ${SUDO}apt-get install -y gnupg wget
wget -O- https://apt.releases.hashicorp.com/gpg | ${SUDO}gpg --dearmor -o /usr/share/keyrings/hashicorp-archive-keyring.gpg
echo "deb [signed-by=/usr/share/keyrings/hashicorp-archive-keyring.gpg] https://apt.releases.hashicorp.com ${CODENAME} main" | ${SUDO}tee /etc/apt/sources.list.d/hashicorp.list
${SUDO}apt-get update && ${SUDO}apt-get install -y terraform
INSTALL
fi

# --- chromium + chromedriver (optional: the status page's browser test) -------------
# tests/test_ui.py drives Debian's headless Chromium through Selenium; without these two packages
# that one test is skipped (saying how to install them) and everything else runs. .ci/run installs
# them when it runs as root.
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  ok "chromium + chromedriver (browser test): $(/usr/bin/chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
else
  printf 'OPTIONAL %s\n  install with:\n' "chromium + chromedriver at /usr/bin (the browser test tests/test_ui.py skips without them)"
  sed 's/^/    /' <<INSTALL
${SUDO}apt-get update && ${SUDO}apt-get install -y chromium chromium-driver
INSTALL
fi

if [ "$missing" -ne 0 ]; then
  echo "Some prerequisites are missing (see above)." >&2
  exit 1
fi
echo "All prerequisites found."
