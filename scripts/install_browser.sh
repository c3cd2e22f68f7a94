#!/usr/bin/env bash
# Install headless Chromium and its chromedriver from the Debian packages, for the browser test
# of the serve page (tests/test_web.py). Idempotent: does nothing when /usr/bin/chromium exists.
# Nothing else downloads a browser or driver (the test runs Selenium with SE_OFFLINE=true).
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null)"
