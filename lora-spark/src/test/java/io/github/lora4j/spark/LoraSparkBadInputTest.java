package io.github.lora4j.spark;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.dl4j.LoraDl4j;
import java.util.ArrayList;
import java.util.List;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.deeplearning4j.nn.conf.BackpropType;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.PReLULayer;
import org.deeplearning4j.nn.conf.layers.BaseLayer;
import org.deeplearning4j.nn.conf.layers.misc.FrozenLayerWithBackprop;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.MultiDataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.learning.regularization.L2Regularization;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** Every refusal names what was expected and what came, and leaves the network exactly as it was. */
class LoraSparkBadInputTest {

    private final JavaSparkContext sc = SparkTests.sc();
    private MultiLayerNetwork net;
    private JavaRDD<DataSet> good;

    @BeforeEach
    void setUp() {
        net = TestData.loraMln(DataType.DOUBLE, new Adam(0.01));
        // trained once, so there is updater state that a refusal must not touch either
        net.fit(TestData.rows(DataType.DOUBLE, 1, 4));
        good = TestData.rdd(sc, TestData.partitions(DataType.DOUBLE, new int[][] {{3}, {2}}));
    }

    /** {@code call} throws {@code type} with a message holding every fragment; the network is unchanged. */
    private <T extends Throwable> void refused(Class<T> type, Runnable call, String... fragments) {
        NetworkState before = NetworkState.of(net);
        T e = assertThrows(type, call::run);
        for (String f : fragments) {
            assertTrue(e.getMessage() != null && e.getMessage().contains(f),
                    "expected the message to contain '" + f + "', got: " + e.getMessage());
        }
        before.assertSame(net);
    }

    private JavaRDD<DataSet> rddOf(DataSet... elements) {
        List<List<DataSet>> parts = new ArrayList<>();
        parts.add(List.of(TestData.rows(DataType.DOUBLE, 5, 2)));
        parts.add(List.of(elements));
        return TestData.rdd(sc, parts);
    }

    @Test
    void networkWithoutLoraLayers() {
        MultiLayerNetwork plain = new MultiLayerNetwork(TestData.mlnConf(DataType.DOUBLE, new Adam(0.01)).build());
        plain.init();
        NetworkState before = NetworkState.of(plain);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraSpark.fit(sc, plain, good, 2, 1));
        assertTrue(e.getMessage().contains("expected a network made by LoraDl4j.apply"), e.getMessage());
        before.assertSame(plain);
    }

    @Test
    void batchSizeAndEpochsBelowOne() {
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, good, 0, 1),
                "batchSizePerWorker must be at least 1", "got 0");
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, good, -3, 1), "got -3");
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, good, 2, 0),
                "epochs must be at least 1, got 0");
    }

    @Test
    void nullArguments() {
        refused(NullPointerException.class, () -> LoraSpark.fit(null, net, good, 2, 1), "sc");
        refused(NullPointerException.class, () -> LoraSpark.fit(sc, net, null, 2, 1), "data");
        assertThrows(NullPointerException.class, () -> LoraSpark.fit(sc, (MultiLayerNetwork) null, good, 2, 1));
    }

    @Test
    void emptyRdd() {
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, sc.emptyRDD(), 2, 1),
                "expected training data of at least one row, got an empty RDD");
        List<List<DataSet>> emptyParts = List.of(List.of(), List.of());
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, TestData.rdd(sc, emptyParts), 2, 1),
                "empty RDD (2 partitions, no rows)");
    }

    @Test
    void featuresOfTheWrongWidth() {
        DataSet bad = new DataSet(Nd4j.rand(DataType.DOUBLE, 3, 5), TestData.rows(DataType.DOUBLE, 2, 3).getLabels());
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, rddOf(bad), 2, 1),
                "partition 1, element 0", "expected features of shape [rows, 6]", "nIn of layer 'fc1'", "got [3, 5]");
    }

    @Test
    void labelsOfTheWrongWidth() {
        DataSet ok = TestData.rows(DataType.DOUBLE, 2, 3);
        DataSet bad = new DataSet(ok.getFeatures(), Nd4j.zeros(DataType.DOUBLE, 3, 4));
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, rddOf(ok, bad), 2, 1),
                "partition 1, element 1", "expected labels of shape [rows, 3]", "nOut of layer 'out'", "got [3, 4]");
    }

    @Test
    void featuresOfTheWrongRank() {
        DataSet ok = TestData.rows(DataType.DOUBLE, 2, 3);
        DataSet bad = new DataSet(ok.getFeatures().reshape(3, 6, 1), ok.getLabels());
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, rddOf(bad), 2, 1),
                "expected features of shape [rows, 6]", "got [3, 6, 1]");
    }

    @Test
    void labelsWithOtherRowsThanFeatures() {
        DataSet ok = TestData.rows(DataType.DOUBLE, 2, 3);
        DataSet bad = new DataSet(ok.getFeatures(), TestData.rows(DataType.DOUBLE, 3, 4).getLabels());
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, rddOf(bad), 2, 1),
                "expected labels to have 3 rows", "got shape [4, 3]");
    }

    @Test
    void nanAndInfinity() {
        DataSet nan = TestData.rows(DataType.DOUBLE, 2, 3);
        nan.getFeatures().putScalar(2, 4, Double.NaN);
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, rddOf(nan), 2, 1),
                "partition 1, element 0: features holds NaN in row 2; expected finite numbers");
        DataSet inf = TestData.rows(DataType.DOUBLE, 2, 3);
        inf.getLabels().putScalar(1, 0, Double.NEGATIVE_INFINITY);
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, rddOf(inf), 2, 1),
                "labels holds -Infinity in row 1");
    }

    @Test
    void masksOnSomeElementsOnly() {
        DataSet a = TestData.rows(DataType.DOUBLE, 2, 3);
        DataSet b = TestData.rows(DataType.DOUBLE, 3, 2);
        b.setLabelsMaskArray(Nd4j.ones(DataType.DOUBLE, 2, 3));
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, rddOf(a, b), 2, 1),
                "partition 1, element 1", "labels mask");
    }

    @Test
    void mergedNetwork() {
        LoraDl4j.merge(net);
        refused(IllegalStateException.class, () -> LoraSpark.fit(sc, net, good, 2, 1), "merged",
                "LoraDl4j.unmerge(net)");
    }

    @Test
    void truncatedBackprop() {
        net.getLayerWiseConfigurations().setBackpropType(BackpropType.TruncatedBPTT);
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, good, 2, 1), "truncated BPTT");
    }

    @Test
    void aTrainableBaseParameter() {
        // LoraDl4j freezes the PReLU layer in DL4J's FrozenLayerWithBackprop with a NoOp updater. Given an updater and
        // weight decay again, fit would change its W (the gradient is zero, the decay is not), but LoraSpark's
        // workers would never see the change: refused.
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder()
                .seed(7).dataType(DataType.DOUBLE).updater(new Adam(0.01))
                .list()
                .layer(new DenseLayer.Builder().name("fc1").nIn(TestData.IN).nOut(TestData.HIDDEN).build())
                .layer(new PReLULayer.Builder().name("prelu").inputShape(TestData.HIDDEN).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).name("out").nOut(TestData.CLASSES)
                        .activation(Activation.SOFTMAX).build())
                .setInputType(InputType.feedForward(TestData.IN))
                .build();
        net = TestData.lora(conf);
        assertTrue(net.getLayerWiseConfigurations().getConf(1).getLayer() instanceof FrozenLayerWithBackprop);
        BaseLayer prelu = (BaseLayer) net.getLayer(1).conf().getLayer();  // the wrapped layer's own configuration
        prelu.setIUpdater(new Sgd(0.1));
        prelu.setRegularization(List.of(new L2Regularization(0.5)));
        net.getLayer(1).getParam("W").assign(0.25);  // PReLU starts at 0, where decay does nothing
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, good, 2, 1),
                "parameter 'W' of layer 'prelu' has updater Sgd", "expected only loraA and loraB to be trained");
        // ... and rightly: DL4J's own fit does change it
        double[] alpha = Equivalence.bits(net.getLayer(1).getParam("W"));
        net.fit(TestData.rows(DataType.DOUBLE, 3, 8));
        assertFalse(java.util.Arrays.equals(alpha, Equivalence.bits(net.getLayer(1).getParam("W"))));
    }

    @Test
    void graphWithTheWrongNumberOfInputs() {
        ComputationGraph graph = TestData.loraGraph(DataType.DOUBLE, new Adam(0.01));
        MultiDataSet ok = TestData.graphRows(DataType.DOUBLE, 1, 3);
        MultiDataSet bad = new org.nd4j.linalg.dataset.MultiDataSet(new INDArray[] {ok.getFeatures(0)},
                ok.getLabels());
        NetworkState before = NetworkState.of(graph);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LoraSpark.fit(sc, graph,
                TestData.rdd(sc, List.of(List.of(ok), List.of(bad))), 2, 1));
        assertTrue(e.getMessage().contains("partition 1, element 0: expected 2 features arrays (one per network "
                + "input), got 1"), e.getMessage());
        before.assertSame(graph);
    }

    @Test
    void graphInputOfTheWrongWidth() {
        ComputationGraph graph = TestData.loraGraph(DataType.DOUBLE, new Adam(0.01));
        MultiDataSet ok = TestData.graphRows(DataType.DOUBLE, 1, 3);
        MultiDataSet bad = new org.nd4j.linalg.dataset.MultiDataSet(
                new INDArray[] {ok.getFeatures(0), Nd4j.zeros(DataType.DOUBLE, 3, 5)}, ok.getLabels());
        NetworkState before = NetworkState.of(graph);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LoraSpark.fit(sc, graph,
                TestData.rdd(sc, List.of(List.of(ok, bad))), 2, 1));
        assertTrue(e.getMessage().contains("expected features[1] of shape [rows, 4] (nIn of layer 'side' reading "
                + "input 'b'), got [3, 5]"), e.getMessage());
        before.assertSame(graph);
    }

    @Test
    @SuppressWarnings({"unchecked", "rawtypes"})
    void elementsOfTheWrongKind() {
        JavaRDD raw = TestData.rdd(sc, List.of(List.of(TestData.graphRows(DataType.DOUBLE, 1, 3))));
        refused(IllegalArgumentException.class, () -> LoraSpark.fit(sc, net, (JavaRDD<DataSet>) raw, 2, 1),
                "partition 0, element 0: expected a DataSet, got org.nd4j.linalg.dataset.MultiDataSet");
    }

    @Test
    void stoppedContext() {
        JavaSparkContext shared = SparkTests.sc();
        shared.stop();
        try {
            refused(IllegalStateException.class, () -> LoraSpark.fit(shared, net, good, 2, 1),
                    "the SparkContext is stopped");
        } finally {
            SparkTests.sc(); // a fresh one for the next tests
        }
    }
}
