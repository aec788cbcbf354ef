package io.github.lora4j.examples;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.dl4j.LoraDl4j;
import io.github.lora4j.dl4j.LoraParamInitializer;
import io.github.lora4j.spark.LoraSpark;
import io.github.lora4j.spark.SparkFitReport;
import io.github.lora4j.spark.StepStats;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.deeplearning4j.datasets.iterator.utilty.ListDataSetIterator;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Example 6: {@link Dl4jFineTune}'s LoRA fine-tuning, on Apache Spark. The base network ({@code 16 → 64 → 64 → 8})
 * learns task A on the driver; {@link LoraDl4j#apply} puts LoRA on its three layers; {@link LoraSpark#fit} trains
 * the adapters on task B (task A seen through a rotation) spread over the RDD's partitions, broadcasting only
 * {@code A} and {@code B} each step; {@link LoraSpark#output} computes the test predictions on the executors. It
 * prints the steps, the accuracy, and the bytes per step against what full fine-tuning would move. With
 * {@code --verify} it runs in DOUBLE and also trains a twin network with DL4J's own {@code fit} on the same global
 * batches (every partition's rows {@code [t·b, (t+1)·b)} per step), and fails unless A and B agree within 1e-10.
 *
 * <pre>
 * mvn -B -q -Pspark-example -DskipTests -pl lora-examples -am package              # local[2]
 * mvn -B -q -Pspark-example -DskipTests -pl lora-examples -am package -Dspark.args="--master spark://host:7077 --verify"
 * spark-submit --class io.github.lora4j.examples.SparkFineTune lora-examples/target/lora-examples-spark-job.jar
 * </pre>
 * Options: {@code --master URL} (default: spark-submit's master, else {@code local[2]}), {@code --partitions n},
 * {@code --batch rows} (per partition and step), {@code --smoke} (the small configuration), {@code --verify}.
 */
public final class SparkFineTune {

    /** The tolerance of {@code --verify}: relative, in double. */
    public static final double VERIFY_TOLERANCE = 1e-10;

    private SparkFineTune() {
    }

    /**
     * What to run.
     *
     * @param model          the network, the tasks and the LoRA settings ({@link Dl4jFineTune.Config})
     * @param partitions     partitions of task B's training data
     * @param batchPerWorker rows each partition contributes per step
     * @param verify         run in DOUBLE and compare with {@code fit} on the same global batches
     */
    public record Config(Dl4jFineTune.Config model, int partitions, int batchPerWorker, boolean verify) {

        /** Validates the fields, naming the field, the value and the allowed range. */
        public Config {
            if (model == null) {
                throw new IllegalArgumentException("model: expected a Dl4jFineTune.Config, got null");
            }
            if (partitions < 1 || batchPerWorker < 1) {
                throw new IllegalArgumentException("partitions/batchPerWorker: expected >= 1, got " + partitions + "/"
                        + batchPerWorker);
            }
        }

        /** Dl4jFineTune's defaults on 4 partitions of 25 rows per step (global batches of 100, as there). */
        public static Config defaults() {
            return new Config(Dl4jFineTune.Config.defaults(), 4, 25, false);
        }

        /** The small configuration of the smoke test and the cluster run. */
        public static Config smoke() {
            return new Config(Dl4jFineTune.Config.smoke(), 2, 32, false);
        }

        /** This configuration with {@code verify} on. */
        public Config verified() {
            return new Config(model, partitions, batchPerWorker, true);
        }
    }

    /**
     * What the example measured.
     *
     * @param accuracyA       the base network on task A's test set
     * @param accuracyBBefore the base network on task B's test set
     * @param accuracyBAfter  the LoRA network on task B's test set after {@link LoraSpark#fit}, by
     *                        {@link LoraSpark#output}
     * @param report          {@link LoraSpark#fit}'s report
     * @param frozenUnchanged whether every {@code W} and {@code b} is bitwise the base network's after training
     * @param verifyError     with {@code --verify}: the largest relative difference of A or B from the twin trained
     *                        by {@code fit}; NaN otherwise
     */
    public record Result(double accuracyA, double accuracyBBefore, double accuracyBAfter, SparkFitReport report,
                         boolean frozenUnchanged, double verifyError) {
    }

    private static DataSet dataSet(FineTuneDemo.Config d, double[][] centres, int n, long seed, boolean rotate,
            DataType type) {
        FineTuneDemo.Data s = FineTuneDemo.sample(d, centres, n, seed, rotate);
        return new DataSet(s.x().castTo(type), s.oneHot().castTo(type));
    }

    /** Runs the example on {@code sc} and prints its report to {@code out}. */
    public static Result run(Config c, JavaSparkContext sc, PrintStream out) {
        FineTuneDemo.Config d = c.model().data();
        DataType type = c.verify() ? DataType.DOUBLE : DataType.FLOAT;
        double[][] centres = FineTuneDemo.blobCentres(d);
        DataSet trainA = dataSet(d, centres, d.trainA(), d.seed() + 1, false, type);
        DataSet testA = dataSet(d, centres, d.test(), d.seed() + 2, false, type);
        DataSet trainB = dataSet(d, centres, d.trainB(), d.seed() + 3, true, type);
        DataSet testB = dataSet(d, centres, d.test(), d.seed() + 4, true, type);

        // Task A on the driver: the pre-trained base network a user would start from.
        MultiLayerNetwork base = Dl4jFineTune.baseNetwork(c.model(), type);
        base.fit(new ListDataSetIterator<>(trainA.asList(), d.batch()), d.epochsA());
        double accA = base.evaluate(new ListDataSetIterator<>(testA.asList(), 500)).accuracy();
        double accBBefore = base.evaluate(new ListDataSetIterator<>(testB.asList(), 500)).accuracy();

        LoraConfig lora = LoraConfig.builder().rank(c.model().rank()).alpha(c.model().alpha()).seed(d.seed()).build();
        String[] targets = {"layer0", "layer1", "layer2"};
        MultiLayerNetwork twin = c.verify() ? LoraDl4j.apply(base, lora, targets) : null;   // for --verify

        // docs/spark.md: train
        MultiLayerNetwork adapted = LoraDl4j.apply(base, lora, targets);

        // Task B as an RDD: DataSets of 10 rows each, spread over the partitions (rows are what count).
        JavaRDD<DataSet> train = sc.parallelize(trainB.batchBy(10), c.partitions()).cache();
        SparkFitReport report = LoraSpark.fit(sc, adapted, train, c.batchPerWorker(), d.epochsB());

        // Test predictions on the executors, from one broadcast of the merged network.
        JavaRDD<INDArray> features = sc.parallelize(testB.batchBy(100).stream().map(DataSet::getFeatures).toList(),
                c.partitions());
        List<INDArray> outputs = LoraSpark.output(sc, adapted, features).collect();
        // end
        double accBAfter = accuracy(outputs, testB.getLabels());

        boolean frozen = true;
        for (int i = 0; i < base.getnLayers(); i++) {
            for (String key : List.of(LoraParamInitializer.WEIGHT_KEY, LoraParamInitializer.BIAS_KEY)) {
                frozen &= Arrays.equals(base.getLayer(i).getParam(key).dup().data().asDouble(),
                        adapted.getLayer(i).getParam(key).dup().data().asDouble());
            }
        }
        double verifyError = Double.NaN;
        if (twin != null) {
            List<DataSet> global = globalBatches(train.glom().collect(), c.batchPerWorker());
            twin.fit(new ListDataSetIterator<>(global, 1), d.epochsB());
            verifyError = maxRelativeDifference(adapted, twin);
        }
        train.unpersist(false);
        Result r = new Result(accA, accBBefore, accBAfter, report, frozen, verifyError);
        print(out, c, sc, r, twin);
        return r;
    }

    private static double accuracy(List<INDArray> outputs, INDArray labels) {
        int row = 0;
        int correct = 0;
        for (INDArray o : outputs) {
            int[] predicted = o.argMax(1).toIntVector();
            for (int p : predicted) {
                correct += labels.getRow(row++).argMax().getInt(0) == p ? 1 : 0;
            }
        }
        return (double) correct / row;
    }

    /**
     * The global batches of {@link LoraSpark#fit}'s semantics, from the partitions' contents: step {@code t}
     * concatenates, in partition order, every partition's rows {@code [t·b, (t+1)·b)}.
     */
    static List<DataSet> globalBatches(List<List<DataSet>> partitions, int b) {
        List<DataSet> merged = new ArrayList<>();
        long steps = 0;
        for (List<DataSet> p : partitions) {
            if (!p.isEmpty()) {
                DataSet m = DataSet.merge(p);
                merged.add(m);
                steps = Math.max(steps, (m.numExamples() + b - 1) / b);
            }
        }
        List<DataSet> out = new ArrayList<>();
        for (long t = 0; t < steps; t++) {
            List<INDArray> f = new ArrayList<>();
            List<INDArray> l = new ArrayList<>();
            for (DataSet m : merged) {
                long from = t * b;
                if (from < m.numExamples()) {
                    long to = Math.min(m.numExamples(), from + b);
                    f.add(m.getFeatures().get(NDArrayIndex.interval(from, to), NDArrayIndex.all()));
                    l.add(m.getLabels().get(NDArrayIndex.interval(from, to), NDArrayIndex.all()));
                }
            }
            out.add(new DataSet(Nd4j.concat(0, f.toArray(new INDArray[0])), Nd4j.concat(0, l.toArray(new INDArray[0]))));
        }
        return out;
    }

    /** Largest ‖A − A'‖∞ / ‖A'‖∞ (and B's) over the LoRA layers. */
    static double maxRelativeDifference(MultiLayerNetwork a, MultiLayerNetwork b) {
        double worst = 0;
        for (int i = 0; i < a.getnLayers(); i++) {
            for (String key : List.of(LoraParamInitializer.LORA_A_KEY, LoraParamInitializer.LORA_B_KEY)) {
                INDArray x = a.getLayer(i).getParam(key);
                INDArray y = b.getLayer(i).getParam(key);
                worst = Math.max(worst, x.sub(y).amaxNumber().doubleValue() / y.amaxNumber().doubleValue());
            }
        }
        return worst;
    }

    private static void print(PrintStream out, Config c, JavaSparkContext sc, Result r, MultiLayerNetwork twin) {
        FineTuneDemo.Config d = c.model().data();
        SparkFitReport rep = r.report();
        out.printf(Locale.ROOT, "Spark master %s: %d partitions of task B, %d rows per partition and step%n",
                sc.master(), c.partitions(), c.batchPerWorker());
        out.printf(Locale.ROOT, "Base network %d → %d → %d → %d (%s), task A on the driver: accuracy on A %.3f, on B "
                + "(rotated inputs) %.3f%n", d.inputDim(), d.hidden(), d.hidden(), d.classes(),
                c.verify() ? "DOUBLE" : "FLOAT", r.accuracyA(), r.accuracyBBefore());
        out.printf(Locale.ROOT, "LoraSpark.fit, LoRA r=%d on layer0..2: %d steps, %,d examples (%d epochs of %d)%n",
                c.model().rank(), rep.stepCount(), rep.examples(), rep.epochs(), d.trainB());
        double[] scores = rep.scores();
        out.printf(Locale.ROOT, "  score: first step %.4f, last step %.4f%n", scores[0], scores[scores.length - 1]);
        out.printf(Locale.ROOT, "  per step: A and B broadcast, %,d bytes; one gradient of %,d bytes back per "
                + "partition; full fine-tuning: %,d bytes each way (LoRA moves %.1f %% of that)%n",
                rep.bytesBroadcastPerStep(), rep.bytesAggregatedPerTask(), rep.fullFineTuneBytesPerStep(),
                100 * rep.trafficRatio());
        out.printf(Locale.ROOT, "  the network travelled once: %,d bytes%n", rep.networkBroadcastBytes());
        out.printf(Locale.ROOT, "  median step %.1f ms (Spark job %.1f ms, slowest task's compute %.1f ms, driver "
                + "update %.1f ms)%n", rep.medianStepMillis(), median(rep, StepStats::jobNanos),
                median(rep, StepStats::computeNanos), median(rep, StepStats::updateNanos));
        out.printf(Locale.ROOT, "Accuracy on B after LoraSpark.fit: %.3f (predictions by LoraSpark.output); W and b "
                + "bitwise unchanged: %b%n", r.accuracyBAfter(), r.frozenUnchanged());
        if (twin != null) {
            out.printf(Locale.ROOT, "Verify: DL4J's fit on the same global batches: largest relative difference of A "
                    + "and B %.2e (tolerance %.0e): %s%n", r.verifyError(), VERIFY_TOLERANCE,
                    r.verifyError() <= VERIFY_TOLERANCE ? "PASS" : "FAIL");
        }
    }

    private static double median(SparkFitReport r, java.util.function.ToLongFunction<StepStats> f) {
        long[] v = r.steps().stream().mapToLong(f).sorted().toArray();
        return v.length == 0 ? Double.NaN : v[v.length / 2] / 1e6;
    }

    /** Entry point; see the class documentation for the options. Exits with 1 if {@code --verify} fails. */
    public static void main(String[] args) {
        boolean smoke = false;
        boolean verify = false;
        String master = null;
        Integer partitions = null;
        Integer batch = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--smoke" -> smoke = true;
                case "--verify" -> verify = true;
                case "--master" -> master = value(args, ++i, "--master spark://host:7077");
                case "--partitions" -> partitions = Integer.parseInt(value(args, ++i, "--partitions 4"));
                case "--batch" -> batch = Integer.parseInt(value(args, ++i, "--batch 25"));
                default -> throw new IllegalArgumentException("unknown option " + args[i] + "; expected --master URL, "
                        + "--partitions n, --batch rows, --smoke, --verify");
            }
        }
        Config c = smoke ? Config.smoke() : Config.defaults();
        c = new Config(c.model(), partitions != null ? partitions : c.partitions(),
                batch != null ? batch : c.batchPerWorker(), verify);
        FineTuneDemo.limitNativeThreads(1);
        SparkConf conf = new SparkConf().setAppName("lora4j SparkFineTune");  // reads spark-submit's settings
        if (master != null) {
            conf.setMaster(master);
        } else if (!conf.contains("spark.master")) {
            conf.setMaster("local[2]");
        }
        // Small matrices: one native thread per task (each executor core runs its own task).
        conf.setIfMissing("spark.executorEnv.OMP_NUM_THREADS", "1");
        long t0 = System.nanoTime();
        Result r;
        try (JavaSparkContext sc = new JavaSparkContext(conf)) {
            sc.setLogLevel("WARN");
            r = run(c, sc, System.out);
        }
        System.out.printf(Locale.ROOT, "Total wall time %.1f s%n", (System.nanoTime() - t0) / 1e9);
        if (c.verify() && !(r.verifyError() <= VERIFY_TOLERANCE)) {
            System.exit(1);
        }
    }

    private static String value(String[] args, int i, String example) {
        if (i >= args.length) {
            throw new IllegalArgumentException(args[i - 1] + " needs a value, e.g. " + example);
        }
        return args[i];
    }
}
