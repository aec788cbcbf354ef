#!/usr/bin/env bash
# Runs the side-by-side benchmark (lora4j against PyTorch CPU) twice: with OMP_WAIT_POLICY unset, as users run it,
# and with OMP_WAIT_POLICY=PASSIVE for both processes, so the report shows what the OpenMP threads' spinning still
# costs. lora4j must not need the variable; the second report is there to prove it.
#
#   lora-benchmarks/side-by-side.sh [OUT_DIR] [SideBySide options...]
#
# OUT_DIR defaults to lora-benchmarks/results/<date>-side-by-side; the PASSIVE run goes to OUT_DIR/omp-passive.
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE stay as they are for lora4j (SideBySide removes them for PyTorch's own
# OpenBLAS): on a CPU newer than nd4j's OpenBLAS 0.3.19 (Zen 5 here) its detection falls back to an old kernel
# (Barcelona, SSE2) unless OPENBLAS_CORETYPE names one. The report records both.
# Build the jar first: mvn -B -q -DskipTests -pl lora-benchmarks -am package
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-lora-benchmarks/results/$(date +%F)-side-by-side}"
if [ "$#" -gt 0 ]; then
  shift
fi
jar=lora-benchmarks/target/benchmarks.jar
if [ ! -f "$jar" ]; then
  echo "missing $jar: run  mvn -B -q -DskipTests -pl lora-benchmarks -am package  first" >&2
  exit 2
fi
env -u OMP_WAIT_POLICY java -Xmx4g -cp "$jar" io.github.lora4j.benchmarks.sidebyside.SideBySide --out "$out" "$@"
OMP_WAIT_POLICY=PASSIVE java -Xmx4g -cp "$jar" io.github.lora4j.benchmarks.sidebyside.SideBySide --out "$out/omp-passive" "$@"
