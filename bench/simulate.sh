#!/usr/bin/env bash
# The scheduler's policy tables (virtual time, seeded): drover against round
# robin, least-connections, an oracle and the ideal.
source "$(dirname "$0")/lib.sh"
"$DROVER" simulate --scenario "${1:-all}" --seed "${SEED:-1}"
