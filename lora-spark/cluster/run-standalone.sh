#!/usr/bin/env bash
# A real Spark standalone cluster on this machine, as a user's cluster runs it: a master and two workers (one core
# each) started from Spark's own jars (SPARK_HOME/jars, copied from Maven), and the SparkFineTune example submitted
# with spark-submit's main class as a shaded application jar, with --verify: the fit on the cluster must equal
# DL4J's own fit on the same global batches within 1e-10, W and b bitwise unchanged, and both executors must have
# run tasks. Stops the cluster (only the processes it started) on exit. Output: lora-spark/target/cluster/.
#
#   lora-spark/cluster/run-standalone.sh            # from anywhere; about a minute once Maven has everything
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=$ROOT/lora-spark/target/cluster
export SPARK_HOME=$WORK/spark-home
export SPARK_SCALA_VERSION=2.13   # the launcher asks; a distribution has it in its folder layout
export SPARK_LOCAL_IP=127.0.0.1
rm -rf "$WORK"
mkdir -p "$SPARK_HOME/jars" "$WORK/logs"

OPENS="--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.lang.invoke=ALL-UNNAMED \
--add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED \
--add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED \
--add-opens=java.base/java.net=ALL-UNNAMED --add-opens=java.base/sun.util.calendar=ALL-UNNAMED"

t0=$(date +%s)
echo "== SPARK_HOME/jars from Maven, and the application jar (shaded, without Spark and Jackson)"
mvn -B -q -f lora-spark/cluster/spark-home/pom.xml dependency:copy-dependencies -DoutputDirectory="$SPARK_HOME/jars"
mvn -B -q -Pspark-job -DskipTests -pl lora-examples -am package
APP_JAR=$ROOT/lora-examples/target/lora-examples-spark-job.jar
echo "   $(ls "$SPARK_HOME/jars" | wc -l) Spark jars; application jar $(du -h "$APP_JAR" | cut -f1)"

PIDS=()
stop_cluster() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_cluster EXIT

# wait_for <file> <pattern> <what>: up to 60 s
wait_for() {
  for _ in $(seq 1 120); do
    if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.5
  done
  echo "timed out waiting for $3; log:"; cat "$1"; exit 1
}

# Port 0 everywhere: Spark picks free ports, so a run never collides with another cluster on the machine.
java -cp "$SPARK_HOME/jars/*" -Xmx512m $OPENS org.apache.spark.deploy.master.Master \
  --host 127.0.0.1 --port 0 --webui-port 0 > "$WORK/logs/master.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/logs/master.log" "I have been elected leader" "the master"
MASTER_URL=$(grep -o 'Starting Spark master at spark://[0-9.:]*' "$WORK/logs/master.log" | sed 's/.* at //')
echo "== master $MASTER_URL and two workers (1 core, 2 GiB each)"
for w in 1 2; do
  java -cp "$SPARK_HOME/jars/*" -Xmx512m $OPENS org.apache.spark.deploy.worker.Worker \
    --host 127.0.0.1 --cores 1 --memory 2g --work-dir "$WORK/worker$w" --port 0 --webui-port 0 \
    "$MASTER_URL" > "$WORK/logs/worker$w.log" 2>&1 &
  PIDS+=($!)
done
wait_for "$WORK/logs/worker1.log" "Successfully registered with master" "worker 1"
wait_for "$WORK/logs/worker2.log" "Successfully registered with master" "worker 2"
t1=$(date +%s)

echo "== spark-submit SparkFineTune --smoke --verify (client mode, 2 executors, 2 partitions)"
set +e
java -cp "$SPARK_HOME/jars/*" -Xmx2g $OPENS org.apache.spark.deploy.SparkSubmit \
  --master "$MASTER_URL" --deploy-mode client \
  --class io.github.lora4j.examples.SparkFineTune \
  --executor-memory 1g --total-executor-cores 2 \
  --conf spark.scheduler.minRegisteredResourcesRatio=1.0 \
  --conf spark.scheduler.maxRegisteredResourcesWaitingTime=60s \
  --conf spark.executorEnv.OMP_NUM_THREADS=1 \
  "$APP_JAR" --smoke --verify --partitions 2 2> "$WORK/logs/driver.log" | tee "$WORK/submit.out"
rc=${PIPESTATUS[0]}
set -e
t2=$(date +%s)

# Both executors must have run tasks: each worker's executor log names the tasks it ran.
ran=()
for w in 1 2; do
  n=$(cat "$WORK"/worker$w/app-*/*/stderr 2>/dev/null | grep -c "Running task" || true)
  ran+=("$n")
done
echo "== tasks run by the executor of worker 1: ${ran[0]}, of worker 2: ${ran[1]}"
echo "== cluster start $((t1 - t0)) s (with the builds), submit to finish $((t2 - t1)) s"
if [ "$rc" -ne 0 ] || ! grep -q "PASS" "$WORK/submit.out" || [ "${ran[0]}" -eq 0 ] || [ "${ran[1]}" -eq 0 ]; then
  echo "FAILED (exit code $rc); driver log: $WORK/logs/driver.log"
  tail -40 "$WORK/logs/driver.log"
  exit 1
fi
echo "standalone cluster run: OK"
