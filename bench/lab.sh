#!/usr/bin/env bash
# The policy lab's tables (virtual time, seeded): drover against round
# robin, least-connections, an oracle and the ideal.
source "$(dirname "$0")/lib.sh"
"$DROVER" lab --scenario "${1:-all}" --seed "${SEED:-1}"
