package io.github.lora4j.spark;

import java.util.ArrayList;
import java.util.List;
import org.apache.spark.Partition;
import org.apache.spark.SparkEnv;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.broadcast.Broadcast;
import org.apache.spark.serializer.SerializerInstance;
import org.apache.spark.storage.StorageLevel;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.updater.BaseMultiLayerUpdater;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.deeplearning4j.optimize.api.StepFunction;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.deeplearning4j.optimize.solvers.BaseOptimizer;
import org.deeplearning4j.optimize.solvers.StochasticGradientDescent;
import org.deeplearning4j.optimize.stepfunctions.StepFunctions;
import org.nd4j.linalg.api.ndarray.INDArray;
import scala.Tuple2;
import scala.reflect.ClassTag$;

/**
 * The driver's side of {@link LoraSpark#fit}: prepares the data once, broadcasts the network once, then per step
 * broadcasts A and B, sums the partitions' gradients with {@code treeAggregate} and applies them with the network's
 * own updater, exactly as {@code StochasticGradientDescent.optimize} does inside {@code net.fit}:
 * <pre>
 *   gradient (Σ over the global batch's rows) → updater.update(gradient, iteration, epoch, rows)
 *       (÷ rows if miniBatch, gradient normalisation, regularisation, Adam …) → params −= update
 *   → score, listeners' iterationDone → iteration + 1 → constraints
 * </pre>
 */
final class SyncTrainer {

    /** {@code treeAggregate}'s depth: partial sums combine on executors before reaching the driver. */
    static final int AGGREGATION_DEPTH = 2;

    private final JavaSparkContext sc;
    private final NetworkAccess net;
    private final DataSpec spec;
    private final int batchSize;
    private final int epochs;
    private final AdapterLayout layout;
    private final List<StepStats> steps = new ArrayList<>();
    /** Largest serialised partition object left as it is (a file split, a range, an index: tens of bytes). */
    static final int LIGHT_PARTITION_BYTES = 64 << 10;

    private int partitions;
    private boolean inputReshuffled;
    private long networkBroadcastBytes;
    private final long networkParameters;

    SyncTrainer(JavaSparkContext sc, NetworkAccess net, DataSpec spec, int batchSize, int epochs) {
        this.sc = sc;
        this.net = net;
        this.spec = spec;
        this.batchSize = batchSize;
        this.epochs = epochs;
        this.layout = AdapterLayout.of(net);
        this.networkParameters = net.params().length();
    }

    @SuppressWarnings("unchecked")
    SparkFitReport fit(JavaRDD<?> data) {
        partitions = data.getNumPartitions();
        JavaRDD<PartitionBatches> prepared = ((JavaRDD<Object>) data)
                .mapPartitionsWithIndex(new Tasks.Prepare(spec, batchSize), true);
        inputReshuffled = partitionsCarryRows(data);
        if (inputReshuffled) {
            // Every task ships its partition object; here that object holds the rows (a parallelised collection),
            // and every step would send them again. One shuffle that keeps each partition's rows in place gives
            // the persisted batches partitions of a few bytes, and keeps the lineage (a lost executor's rows are
            // recomputed, not lost).
            prepared = prepared.mapToPair(pb -> new Tuple2<>(pb.partition(), pb))
                    .partitionBy(new IndexPartitioner(partitions)).values();
        }
        prepared = prepared.persist(StorageLevel.MEMORY_AND_DISK());
        prepared.setName("lora4j: rows in batches of " + batchSize);
        Broadcast<NetworkPayload> network = null;
        String payloadId = null;
        try {
            int stepsPerEpoch = stepsPerEpoch(prepared);
            NetworkPayload payload = NetworkPayload.of(net);
            payloadId = payload.id();
            networkBroadcastBytes = payload.bytes();
            network = sc.broadcast(payload);
            prepareDriver();
            for (int e = 0; e < epochs; e++) {
                for (TrainingListener l : net.listeners()) {
                    l.onEpochStart(net.model());
                }
                for (int t = 0; t < stepsPerEpoch; t++) {
                    step(prepared, network, t);
                }
                for (TrainingListener l : net.listeners()) {
                    l.onEpochEnd(net.model());
                }
                net.incrementEpoch();
            }
            return report();
        } finally {
            cleanUp(prepared, network, payloadId);
        }
    }

    /**
     * Whether the data's partition objects, which Spark serialises into every task, hold more than
     * {@value #LIGHT_PARTITION_BYTES} bytes: the rows themselves, as a parallelised collection's do.
     */
    private static boolean partitionsCarryRows(JavaRDD<?> data) {
        SerializerInstance ser = SparkEnv.get().closureSerializer().newInstance();
        for (Partition p : data.rdd().partitions()) {
            if (ser.serialize(p, ClassTag$.MODULE$.apply(Partition.class)).remaining() > LIGHT_PARTITION_BYTES) {
                return true;
            }
        }
        return false;
    }

    /** Runs the preparation (checking every element) and returns the steps of an epoch: the most batches of any partition. */
    private int stepsPerEpoch(JavaRDD<PartitionBatches> prepared) {
        List<long[]> counts;
        try {
            counts = prepared.map(pb -> new long[] {pb.batches().size(), pb.rows()}).collect();
        } catch (Exception e) {
            IllegalArgumentException bad = cause(e, IllegalArgumentException.class);
            if (bad != null) {
                throw new IllegalArgumentException(bad.getMessage(), e);
            }
            throw new SparkFitException("preparing the data failed before any step: " + rootMessage(e)
                    + "; the network is unchanged", e, report());
        }
        long rows = counts.stream().mapToLong(c -> c[1]).sum();
        if (rows == 0) {
            throw new IllegalArgumentException("expected training data of at least one row, got an empty RDD ("
                    + partitions + " partition" + (partitions == 1 ? "" : "s") + ", no rows)");
        }
        return (int) counts.stream().mapToLong(c -> c[0]).max().orElse(0);
    }

    /**
     * Creates the updater if the network has none (as {@code fit} would) and clears the flat gradient vector, whose
     * frozen parts ({@code W}, {@code b}) must be zero: the parameter step subtracts it from every parameter.
     */
    private void prepareDriver() {
        net.updater().getFlattenedGradientsView().assign(0);
    }

    private void step(JavaRDD<PartitionBatches> prepared, Broadcast<NetworkPayload> network, int t) {
        long t0 = System.nanoTime();
        int iteration = net.iteration();
        int epoch = net.epoch();
        FlatVector adapter = layout.readParams();
        Broadcast<StepInput> input = sc.broadcast(new StepInput(t, iteration, epoch, adapter));
        long t1 = System.nanoTime();
        StepResult sum;
        try {
            sum = prepared.mapPartitions(new Tasks.Gradient(network, input))
                    .treeAggregate(StepResult.empty(), StepResult::merge, StepResult::merge, AGGREGATION_DEPTH);
        } catch (Exception e) {
            throw new SparkFitException("step " + t + " of epoch " + epoch + " (iteration " + iteration
                    + ") failed: " + rootMessage(e) + "; " + stateNote(), e, report());
        } finally {
            destroy(input);
        }
        long t2 = System.nanoTime();
        int bad = sum.gradient.firstNonFinite();
        if (bad >= 0) {
            throw new SparkFitException("step " + t + " of epoch " + epoch + " (iteration " + iteration
                    + ") gave a non-finite gradient (" + sum.gradient.get(bad) + " at element " + bad + " of the "
                    + "adapters of " + layout.layerNames() + "); lower the learning rate or check the data; "
                    + stateNote(), null, report());
        }
        double score;
        try {
            score = update(sum, adapter, iteration, epoch);
        } catch (RuntimeException e) {
            throw new SparkFitException("step " + t + " of epoch " + epoch + " (iteration " + iteration
                    + "): the driver's update failed: " + rootMessage(e) + "; it was rolled back, and "
                    + stateNote(), e, report());
        }
        net.setScore(score);
        for (TrainingListener l : net.listeners()) {
            l.iterationDone(net.model(), iteration, epoch);
        }
        net.setCounts(iteration + 1, epoch);
        net.applyConstraints(iteration + 1, epoch);
        long t3 = System.nanoTime();
        steps.add(new StepStats(epoch, iteration, sum.rows, sum.tasks, score, layout.bytes(),
                sum.tasks * layout.bytes(), t3 - t0, t1 - t0, t2 - t1, sum.maxComputeNanos, t3 - t2));
    }

    /**
     * The update of {@code StochasticGradientDescent.optimize}, with the summed gradient in place of the network's
     * own backward pass. All or nothing: if it throws, A, B and the updater state are restored.
     *
     * @return the step's score
     */
    private double update(StepResult sum, FlatVector adapterBefore, int iteration, int epoch) {
        double reg = net.regularizationScore();
        double score = sum.lossSum / (net.miniBatch() ? sum.rows : 1) + reg;
        BaseMultiLayerUpdater<?> updater = net.updater();
        INDArray state = updater.getStateViewArray();
        INDArray stateBefore = state == null ? null : state.dup();
        try {
            INDArray flat = updater.getFlattenedGradientsView();
            Gradient gradient = layout.writeGradients(sum.gradient, flat);
            updater.update(gradient, iteration, epoch, Math.toIntExact(sum.rows), LayerWorkspaceMgr.noWorkspaces());
            stepFunction().step(net.params(), flat.reshape(flat.length()));   // params −= update (W, b: −= 0)
            return score;
        } catch (RuntimeException e) {
            layout.writeParams(adapterBefore);
            if (stateBefore != null) {
                state.assign(stateBefore);
            }
            throw e;
        }
    }

    /** The step function {@code fit} uses: the configured one, else SGD's default (params −= update). */
    private StepFunction stepFunction() {
        StepFunction configured = StepFunctions.createStepFunction(net.defaultConf().getStepFunction());
        return configured != null ? configured
                : BaseOptimizer.getDefaultStepFunctionForOptimizer(StochasticGradientDescent.class);
    }

    private String stateNote() {
        return "the network holds the state after " + steps.size() + " completed step" + (steps.size() == 1 ? "" : "s")
                + " of this fit (iteration " + net.iteration() + ", epoch " + net.epoch() + ")";
    }

    private SparkFitReport report() {
        return new SparkFitReport(epochs, partitions, batchSize, layout.length(), networkParameters,
                FlatVector.elementBytes(layout.dataType()), networkBroadcastBytes, inputReshuffled, steps);
    }

    private static void destroy(Broadcast<?> b) {
        try {
            b.destroy();
        } catch (RuntimeException ignored) {
            // the context may be stopping; nothing is left to free then
        }
    }

    private static void cleanUp(JavaRDD<PartitionBatches> prepared, Broadcast<NetworkPayload> network, String id) {
        try {
            prepared.unpersist(false);
        } catch (RuntimeException ignored) {
            // as in destroy
        }
        if (network != null) {
            destroy(network);
        }
        if (id != null) {
            WorkerCache.evict(id);  // local mode: the executors are this JVM
        }
    }

    static <T extends Throwable> T cause(Throwable e, Class<T> type) {
        for (Throwable c = e; c != null; c = c.getCause()) {
            if (type.isInstance(c)) {
                return type.cast(c);
            }
        }
        return null;
    }

    /** The innermost cause's class and message: what failed in the task, under Spark's wrappers. */
    static String rootMessage(Throwable e) {
        Throwable root = e;
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
        }
        return root.getClass().getName() + ": " + root.getMessage();
    }
}
