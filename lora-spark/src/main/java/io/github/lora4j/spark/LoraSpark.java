package io.github.lora4j.spark;

import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_A_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_B_KEY;

import io.github.lora4j.dl4j.LoraDl4j;
import java.util.Objects;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.broadcast.Broadcast;
import org.deeplearning4j.nn.api.Layer;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.api.OptimizationAlgorithm;
import org.deeplearning4j.nn.conf.BackpropType;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.MultiDataSet;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.NoOp;

/**
 * LoRA fine-tuning of a DL4J network on Apache Spark by synchronous data parallelism, in which only the adapters
 * travel.
 *
 * <pre>{@code
 * MultiLayerNetwork lora = LoraDl4j.apply(net, LoraConfig.builder().rank(8).alpha(16).build(), "fc1", "out");
 * SparkFitReport report = LoraSpark.fit(sc, lora, trainingData, 32, 3);   // trains lora in place, on the driver
 * JavaRDD<INDArray> predictions = LoraSpark.output(sc, lora, features);
 * }</pre>
 *
 * <h2>What a fit computes</h2>
 * In step {@code t} of an epoch every partition contributes its rows {@code [t·b, (t+1)·b)} ({@code b} =
 * {@code batchSizePerWorker}; fewer or none once it runs out; the {@code DataSet}s of a partition may hold one row
 * or many: rows are what count). The gradient of every {@code A} and {@code B} is the mean over all rows of the step,
 * and the network's own updater applies it once, on the driver, counting iterations and epochs as {@code fit} does
 * (Adam, schedules, gradient normalisation and regularisation as configured). So a fit equals
 * {@code net.fit(iterator, epochs)} over the global batches that concatenate those rows in partition order, up to
 * the rounding of summing partial gradients in another order. An epoch runs until every partition is exhausted.
 * The network's listeners get {@code onEpochStart}, {@code iterationDone} (with the step's score in
 * {@code net.score()}) and {@code onEpochEnd} on the driver; the forward/backward callbacks would run on the
 * workers and are not called.
 *
 * <h2>What travels</h2>
 * The network (frozen base and all) travels once per fit, as a broadcast. Each step broadcasts {@code A} and
 * {@code B} ({@code Σ r·(nIn + nOut)} numbers) and each partition sends back one gradient of that size through
 * {@code treeAggregate}. {@code W} and {@code b} never come back and stay bitwise unchanged. Each executor builds
 * its networks once per fit (one per concurrent task) and keeps them across steps. The rows are checked, converted
 * to the network's data type and cut into batches once, then persisted ({@code MEMORY_AND_DISK}) until the fit ends.
 *
 * <h2>Errors</h2>
 * Bad arguments ({@code null}, a batch size or epoch count below 1, a network without LoRA layers or one that would
 * train more than its adapters, data of the wrong width, NaN or infinite values, an empty RDD) throw
 * {@link IllegalArgumentException}, a merged network {@link IllegalStateException}; the network is then unchanged.
 * A failing task, a lost cluster or a non-finite gradient throw {@link SparkFitException}, with the network at the
 * last completed step. Task retries are safe: a task is a pure function of the broadcast adapter and its partition.
 *
 * <h2>Not supported</h2>
 * Truncated BPTT, optimisation algorithms other than SGD-with-updater (line searches, L-BFGS), and
 * dropout / weight noise reproducibility (workers draw their own random numbers). The driver must hold the
 * network; the data need not fit on it.
 */
public final class LoraSpark {

    private LoraSpark() {
    }

    /**
     * Trains the adapters of {@code net} on {@code data}, in place: see the class documentation for the exact
     * semantics.
     *
     * @param sc                 the Spark context (local or a cluster)
     * @param net                a network made by {@link LoraDl4j#apply}, unmerged; trained in place (A, B, updater
     *                           state, iteration and epoch counts, score)
     * @param data               training data: features {@code [rows, nIn]} and labels {@code [rows, nOut]} (or as
     *                           the network's first and output layers take them); cache it if it is expensive to
     *                           compute, it is read once
     * @param batchSizePerWorker rows each partition contributes per step, at least 1
     * @param epochs             passes over the data, at least 1
     * @return the report of the fit
     * @throws IllegalArgumentException for bad arguments or data (the network is unchanged)
     * @throws IllegalStateException    for a merged network or a stopped context (the network is unchanged)
     * @throws SparkFitException        if a step fails (the network is at the last completed step)
     */
    public static SparkFitReport fit(JavaSparkContext sc, MultiLayerNetwork net, JavaRDD<DataSet> data,
            int batchSizePerWorker, int epochs) {
        checkFit(sc, net, data, batchSizePerWorker, epochs);
        return new SyncTrainer(sc, NetworkAccess.of(net), DataSpec.of(net), batchSizePerWorker, epochs).fit(data);
    }

    /**
     * {@link #fit(JavaSparkContext, MultiLayerNetwork, JavaRDD, int, int)} for a {@link ComputationGraph}, with one
     * feature array per graph input and one label array per output in each {@link MultiDataSet}.
     *
     * @param sc                 the Spark context
     * @param graph              a graph made by {@link LoraDl4j#apply}, unmerged; trained in place
     * @param data               training data
     * @param batchSizePerWorker rows each partition contributes per step, at least 1
     * @param epochs             passes over the data, at least 1
     * @return the report of the fit
     * @throws IllegalArgumentException for bad arguments or data (the graph is unchanged)
     * @throws IllegalStateException    for a merged graph or a stopped context (the graph is unchanged)
     * @throws SparkFitException        if a step fails (the graph is at the last completed step)
     */
    public static SparkFitReport fit(JavaSparkContext sc, ComputationGraph graph, JavaRDD<MultiDataSet> data,
            int batchSizePerWorker, int epochs) {
        checkFit(sc, graph, data, batchSizePerWorker, epochs);
        return new SyncTrainer(sc, NetworkAccess.of(graph), DataSpec.of(graph), batchSizePerWorker, epochs)
                .fit(data);
    }

    /**
     * The outputs of {@code net} for each element of {@code features}, in order and partitioned as
     * {@code features}. The network is merged into a plain DL4J network ({@link LoraDl4j#mergeAndUnload}, base cost
     * per row) and broadcast once; {@code net} itself is not changed. Lazy, as any Spark transformation: a bad
     * element fails the action that computes it, with a message naming it. The broadcast is freed by Spark's
     * cleaner once the returned RDD is unreachable.
     *
     * @param sc       the Spark context
     * @param net      a network made by {@link LoraDl4j#apply}, merged or not; not changed
     * @param features elements {@code [rows, nIn]} (one row or many each)
     * @return one output {@code [rows, nOut]} per element
     * @throws IllegalArgumentException for a network without LoRA layers
     */
    public static JavaRDD<INDArray> output(JavaSparkContext sc, MultiLayerNetwork net, JavaRDD<INDArray> features) {
        Objects.requireNonNull(sc, "sc must not be null");
        Objects.requireNonNull(features, "features must not be null");
        MultiLayerNetwork merged = LoraDl4j.mergeAndUnload(Objects.requireNonNull(net, "net must not be null"));
        Broadcast<NetworkPayload> b = sc.broadcast(NetworkPayload.of(NetworkAccess.of(merged)));
        return features.mapPartitions(new Tasks.Output(b, DataSpec.of(merged)), true);
    }

    /**
     * {@link #output(JavaSparkContext, MultiLayerNetwork, JavaRDD)} for a {@link ComputationGraph}: one array per
     * graph input in, one per graph output out.
     *
     * @param sc       the Spark context
     * @param graph    a graph made by {@link LoraDl4j#apply}, merged or not; not changed
     * @param features per element, one array {@code [rows, ...]} per graph input
     * @return per element, one array per graph output
     * @throws IllegalArgumentException for a graph without LoRA layers
     */
    public static JavaRDD<INDArray[]> outputGraph(JavaSparkContext sc, ComputationGraph graph,
            JavaRDD<INDArray[]> features) {
        Objects.requireNonNull(sc, "sc must not be null");
        Objects.requireNonNull(features, "features must not be null");
        ComputationGraph merged = LoraDl4j.mergeAndUnload(Objects.requireNonNull(graph, "graph must not be null"));
        Broadcast<NetworkPayload> b = sc.broadcast(NetworkPayload.of(NetworkAccess.of(merged)));
        return features.mapPartitions(new Tasks.GraphOutput(b, DataSpec.of(merged)), true);
    }

    private static void checkFit(JavaSparkContext sc, Model net, JavaRDD<?> data, int batchSizePerWorker,
            int epochs) {
        Objects.requireNonNull(sc, "sc must not be null");
        Objects.requireNonNull(net, "net must not be null");
        Objects.requireNonNull(data, "data must not be null");
        if (batchSizePerWorker < 1) {
            throw new IllegalArgumentException("batchSizePerWorker must be at least 1 (rows per partition and step), "
                    + "got " + batchSizePerWorker);
        }
        if (epochs < 1) {
            throw new IllegalArgumentException("epochs must be at least 1, got " + epochs);
        }
        if (sc.sc().isStopped()) {
            throw new IllegalStateException("the SparkContext is stopped; expected a running one");
        }
        LoraDl4j.trainableParameterCount(net);  // refuses a network without LoRA layers
        if (LoraDl4j.isMerged(net)) {
            throw new IllegalStateException("the network's adapters are merged into W; LoraDl4j.unmerge(net) before "
                    + "training");
        }
        NetworkAccess access = NetworkAccess.of(net);
        if (access.backpropType() == BackpropType.TruncatedBPTT) {
            throw new IllegalArgumentException("truncated BPTT is not supported by LoraSpark.fit; expected backprop "
                    + "type Standard, got " + access.backpropType());
        }
        OptimizationAlgorithm algo = access.defaultConf().getOptimizationAlgo();
        if (algo != OptimizationAlgorithm.STOCHASTIC_GRADIENT_DESCENT) {
            throw new IllegalArgumentException("expected optimization algorithm STOCHASTIC_GRADIENT_DESCENT (one "
                    + "update per step, which LoraSpark applies on the driver), got " + algo);
        }
        for (Layer l : access.layers()) {
            for (String key : l.paramTable().keySet()) {
                IUpdater u = l.getConfig().getUpdaterByParam(key);   // as the network's updater reads it
                if (!key.equals(LORA_A_KEY) && !key.equals(LORA_B_KEY) && u != null && !(u instanceof NoOp)) {
                    throw new IllegalArgumentException("parameter '" + key + "' of layer '"
                            + l.conf().getLayer().getLayerName() + "' has updater " + u + ": expected only loraA and "
                            + "loraB to be trained (LoraSpark sends only the adapters to the workers each step, so any "
                            + "other parameter the updater changed, even by weight decay alone, would go stale on "
                            + "them); keep the NoOp updater LoraDl4j.apply gives every other parameter");
                }
            }
        }
    }
}
