package io.github.lora4j.spark.bench;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.dl4j.LoraDl4j;
import io.github.lora4j.spark.LoraSpark;
import io.github.lora4j.spark.SparkFitReport;
import io.github.lora4j.spark.StepStats;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.function.ToLongFunction;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.executor.TaskMetrics;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.apache.spark.scheduler.TaskInfo;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * Strong scaling of {@link LoraSpark#fit} on one machine: the same fit (2 partitions, {@code b} rows each per step,
 * a FLOAT network {@code 1024 → 1024 → 1024 → 10} with LoRA r = 8 on all three layers, where the gemms dominate) on
 * {@code local[1]} (the two tasks of a step run one after the other) and {@code local[2]} (side by side), rounds
 * interleaved in one process, plus DL4J's own {@code fit} on the same global batches on the driver's thread as the
 * single-core reference. ND4J is held to one thread per task (OMP_NUM_THREADS=1 and its BLAS thread count), so
 * local[n] uses n cores.
 *
 * <p>Where the time goes, per step: from {@link StepStats} (the driver's view: broadcast, job, slowest task's
 * forward/backward, update) and from Spark's task metrics (per task: run time, deserialisation, result
 * serialisation, scheduler delay, GC). Prints a table of medians with min–max over rounds.
 *
 * <pre>
 * flock /tmp/lora4j-bench.lock mvn -B -q -Pspark-bench -DskipTests -pl lora-spark -am package [-Dbench.args="rounds b steps"]
 * </pre>
 */
public final class SparkScalingBenchmark {

    private static final int WIDTH = 1024;
    private static final int CLASSES = 10;

    private SparkScalingBenchmark() {
    }

    /** Task metrics summed over the tasks that ended while recording, in milliseconds. */
    static final class TaskTimes extends SparkListener {
        volatile boolean recording;
        /** The first stage recorded is the fit's preparation of the rows, not a step: left out. */
        int preparationStage = -1;
        long tasks;
        double run;
        double cpu;
        double deserialize;
        double resultSerialization;
        double schedulerDelay;
        double gc;

        @Override
        public synchronized void onTaskEnd(SparkListenerTaskEnd end) {
            if (!recording || end.taskMetrics() == null) {
                return;
            }
            if (preparationStage < 0) {
                preparationStage = end.stageId();
            }
            if (end.stageId() == preparationStage) {
                return;
            }
            TaskMetrics m = end.taskMetrics();
            TaskInfo info = end.taskInfo();
            tasks++;
            run += m.executorRunTime();
            cpu += m.executorCpuTime() / 1e6;
            deserialize += m.executorDeserializeTime();
            resultSerialization += m.resultSerializationTime();
            gc += m.jvmGCTime();
            long delay = info.duration() - m.executorRunTime() - m.executorDeserializeTime()
                    - m.resultSerializationTime() - info.gettingResultTime();
            schedulerDelay += Math.max(0, delay);
        }

        synchronized void reset() {
            tasks = 0;
            preparationStage = -1;
            run = cpu = deserialize = resultSerialization = schedulerDelay = gc = 0;
        }
    }

    static MultiLayerNetwork network() {
        MultiLayerNetwork base = new MultiLayerNetwork(new NeuralNetConfiguration.Builder()
                .seed(1).dataType(DataType.FLOAT).updater(new Adam(1e-3)).weightInit(WeightInit.XAVIER)
                .list()
                .layer(new DenseLayer.Builder().nIn(WIDTH).nOut(WIDTH).activation(Activation.RELU).build())
                .layer(new DenseLayer.Builder().nIn(WIDTH).nOut(WIDTH).activation(Activation.RELU).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(WIDTH).nOut(CLASSES)
                        .activation(Activation.SOFTMAX).build())
                .build());
        base.init();
        return LoraDl4j.apply(base, LoraConfig.builder().rank(8).alpha(16).seed(2).build(), "0", "1", "2");
    }

    /** Partition p's rows, made where the task runs. */
    static final class Generate implements org.apache.spark.api.java.function.FlatMapFunction<Integer, DataSet> {
        private static final long serialVersionUID = 1L;
        private final int rows;

        Generate(int rows) {
            this.rows = rows;
        }

        @Override
        public java.util.Iterator<DataSet> call(Integer p) {
            return partition(p, rows).iterator();
        }
    }

    /** Two partitions of {@code rows} rows each, in DataSets of 64 rows. */
    static List<List<DataSet>> data(int rows) {
        return List.of(partition(0, rows), partition(1, rows));
    }

    static List<DataSet> partition(int p, int rows) {
        Random r = new Random(3 + p);
        {
            List<DataSet> part = new ArrayList<>();
            for (int done = 0; done < rows; done += 64) {
                int n = Math.min(64, rows - done);
                float[][] x = new float[n][WIDTH];
                float[][] y = new float[n][CLASSES];
                for (int i = 0; i < n; i++) {
                    for (int j = 0; j < WIDTH; j++) {
                        x[i][j] = (float) r.nextGaussian();
                    }
                    y[i][r.nextInt(CLASSES)] = 1;
                }
                part.add(new DataSet(Nd4j.create(x), Nd4j.create(y)));
            }
            return part;
        }
    }

    /** One measurement: per-step medians of the measured steps (the first is warm-up, dropped). */
    record Run(Map<String, Double> perStep) {
    }

    static Run spark(String master, List<List<DataSet>> parts, int b) {
        SparkConf conf = new SparkConf().setMaster(master).setAppName("lora4j scaling")
                .set("spark.ui.enabled", "false").set("spark.driver.host", "127.0.0.1");
        try (JavaSparkContext sc = new JavaSparkContext(conf)) {
            sc.setLogLevel("WARN");
            TaskTimes times = new TaskTimes();
            sc.sc().addSparkListener(times);
            int rows = parts.get(0).stream().mapToInt(DataSet::numExamples).sum();
            // The rows are generated on the executors, as a file-based RDD would read them there: a parallelised
            // list would travel inside the partitions (see LoraSpark's notes on parallelize).
            JavaRDD<DataSet> rdd = Boolean.getBoolean("bench.parallelize")
                    ? sc.parallelize(parts, 2).flatMap(List::iterator).cache()
                    : sc.parallelize(List.of(0, 1), 2).flatMap(new Generate(rows)).cache();
            rdd.count();
            MultiLayerNetwork net = network();
            LoraSpark.fit(sc, net, rdd, b, 1);  // warm-up: JIT, executors' networks, caches
            times.reset();
            times.recording = true;
            SparkFitReport r = LoraSpark.fit(sc, net, rdd, b, 1);
            Thread.sleep(1000);  // the listener bus is asynchronous
            times.recording = false;
            int steps = r.stepCount();
            Map<String, Double> m = new LinkedHashMap<>();
            m.put("step (wall)", med(r, StepStats::wallNanos));
            m.put("  Spark job", med(r, StepStats::jobNanos));
            m.put("    slowest task: forward + backward", med(r, StepStats::computeNanos));
            m.put("    rest of the job (scheduling, shipping, summing)", med(r, StepStats::overheadNanos));
            m.put("  driver: broadcast of A, B", med(r, StepStats::broadcastNanos));
            m.put("  driver: update (Adam) and bookkeeping", med(r, StepStats::updateNanos));
            synchronized (times) {
                m.put("per task: run time", times.run / times.tasks);
                m.put("per task: CPU time (run time well above it: the task waited for a core)", times.cpu / times.tasks);
                m.put("per task: deserialisation", times.deserialize / times.tasks);
                m.put("per task: result serialisation", times.resultSerialization / times.tasks);
                m.put("per task: scheduler delay", times.schedulerDelay / times.tasks);
                m.put("per task: GC", times.gc / times.tasks);
                m.put("tasks per step", (double) times.tasks / steps);
            }
            return new Run(m);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    /** DL4J's own fit on the same global batches, on this thread: the single-core reference. */
    static double localFit(List<List<DataSet>> parts, int b) {
        List<DataSet> global = new ArrayList<>();
        DataSet p0 = DataSet.merge(parts.get(0));
        DataSet p1 = DataSet.merge(parts.get(1));
        for (int from = 0; from < p0.numExamples(); from += b) {
            global.add(DataSet.merge(List.of(p0.getRange(from, from + b), p1.getRange(from, from + b))));
        }
        MultiLayerNetwork net = network();
        net.fit(global.get(0));  // warm-up
        long[] t = new long[global.size() - 1];
        for (int i = 1; i < global.size(); i++) {
            long t0 = System.nanoTime();
            net.fit(global.get(i));
            t[i - 1] = System.nanoTime() - t0;
        }
        Arrays.sort(t);
        return t[t.length / 2] / 1e6;
    }

    private static double med(SparkFitReport r, ToLongFunction<StepStats> f) {
        long[] v = r.steps().stream().mapToLong(f).sorted().toArray();
        return v[v.length / 2] / 1e6;
    }

    /**
     * Entry point.
     *
     * @param args rounds (default 5), rows per partition and step {@code b} (default 512), steps per fit (default 6)
     */
    public static void main(String[] args) {
        int rounds = args.length > 0 ? Integer.parseInt(args[0]) : 5;
        int b = args.length > 1 ? Integer.parseInt(args[1]) : 512;
        int steps = args.length > 2 ? Integer.parseInt(args[2]) : 6;
        Nd4j.getEnvironment().setMaxThreads(1);
        Nd4j.getEnvironment().setMaxMasterThreads(1);
        Nd4j.factory().blas().setMaxThreads(1);
        System.out.printf(Locale.ROOT, "LoraSpark.fit scaling: FLOAT 1024 → 1024 → 1024 → 10, LoRA r = 8 on all three "
                + "layers; 2 partitions × %d rows per step (global batch %d); %d steps per fit, %d rounds; "
                + "OMP_NUM_THREADS=%s%n", b, 2 * b, steps, rounds, System.getenv("OMP_NUM_THREADS"));
        List<List<DataSet>> parts = data(b * steps);
        Map<String, List<Double>> one = new LinkedHashMap<>();
        Map<String, List<Double>> two = new LinkedHashMap<>();
        List<Double> fit = new ArrayList<>();
        List<Double> ratio = new ArrayList<>();
        for (int round = 0; round < rounds; round++) {
            boolean oneFirst = round % 2 == 0;  // alternate the order: drifting load hits both alike
            Run r1 = oneFirst ? spark("local[1]", parts, b) : null;
            Run r2 = spark("local[2]", parts, b);
            if (!oneFirst) {
                r1 = spark("local[1]", parts, b);
            }
            fit.add(localFit(parts, b));
            r1.perStep().forEach((k, v) -> one.computeIfAbsent(k, x -> new ArrayList<>()).add(v));
            r2.perStep().forEach((k, v) -> two.computeIfAbsent(k, x -> new ArrayList<>()).add(v));
            double eff = r1.perStep().get("step (wall)") / (2 * r2.perStep().get("step (wall)"));
            ratio.add(eff);
            System.out.printf(Locale.ROOT, "round %d: local[1] %.1f ms/step, local[2] %.1f ms/step, efficiency %.2f, "
                    + "fit on the driver %.1f ms/step; load average %.2f%n", round + 1, r1.perStep().get("step (wall)"),
                    r2.perStep().get("step (wall)"), eff, fit.get(round),
                    java.lang.management.ManagementFactory.getOperatingSystemMXBean().getSystemLoadAverage());
        }
        System.out.println();
        System.out.println("| per step, ms (median, min–max over rounds) | local[1] | local[2] |");
        System.out.println("|---|---|---|");
        for (String k : one.keySet()) {
            System.out.printf(Locale.ROOT, "| %s | %s | %s |%n", k, summary(one.get(k)), summary(two.get(k)));
        }
        System.out.printf(Locale.ROOT, "| DL4J fit of the global batch on the driver (1 thread) | %s | |%n",
                summary(fit));
        System.out.printf(Locale.ROOT, "%nScaling efficiency local[1] → local[2], T1 / (2·T2): %s%n", summary(ratio));
        List<Double> speedup = new ArrayList<>();
        for (int i = 0; i < rounds; i++) {
            speedup.add(fit.get(i) / two.get("step (wall)").get(i));
        }
        System.out.printf(Locale.ROOT, "Speed-up of local[2] over fit on one thread: %s%n", summary(speedup));
    }

    private static String summary(List<Double> v) {
        double[] s = v.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        double median = s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
        return String.format(Locale.ROOT, "%.2f (%.2f–%.2f)", median, s[0], s[s.length - 1]);
    }
}
