package io.github.lora4j.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.spark.api.java.JavaSparkContext;
import org.deeplearning4j.datasets.iterator.ExistingDataSetIterator;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.dataset.DataSet;

/**
 * A step that fails leaves the network at the last completed step: A, B, updater state and counters as
 * {@code fit} on the completed global batches leaves them, never half-updated.
 */
class LoraSparkFaultTest {

    private final JavaSparkContext sc = SparkTests.sc();

    /**
     * {@link TestData#mlnConf} with "fc1" activated by {@link FailAbove}: a task fails (or, with {@code nan}, its
     * gradient turns NaN) on a batch whose pre-activation exceeds 50.
     */
    private static MultiLayerNetwork failingNet(boolean nan) {
        MultiLayerConfiguration conf = TestData.mlnConf(DataType.DOUBLE, LoraSparkEquivalenceTest.adamByIteration())
                .build();
        ((org.deeplearning4j.nn.conf.layers.BaseLayer) conf.getConf(0).getLayer()).setActivationFn(
                new FailAbove(50, nan));
        return TestData.lora(conf);
    }

    /** Partitions {{4, 4}, {6}} (b = 2: 4 steps); {@code row} of partition 1 set to {@code value} in every column. */
    private static List<List<DataSet>> poisoned(int row, double value) {
        List<List<DataSet>> parts = TestData.partitions(DataType.DOUBLE, new int[][] {{4, 4}, {6}});
        parts.get(1).get(0).getFeatures().getRow(row).assign(value);
        return parts;
    }

    @Test
    void aFailingTaskLeavesTheNetworkAtTheLastCompletedStep() {
        int b = 2;
        List<List<DataSet>> parts = poisoned(5, 1e4);  // partition 1, row 5: in step 2 (rows [4, 6))
        MultiLayerNetwork net = failingNet(false);
        Map<String, double[]> before = Equivalence.snapshot(net.getLayers());
        Equivalence.Recorder events = new Equivalence.Recorder();
        net.setListeners(events);

        SparkFitException e = assertThrows(SparkFitException.class,
                () -> LoraSpark.fit(sc, net, TestData.rdd(sc, parts), b, 2));
        assertTrue(e.getMessage().startsWith("step 2 of epoch 0 (iteration 2) failed: "), e.getMessage());
        assertTrue(e.getMessage().contains("IllegalStateException: FailAbove: input "), e.getMessage());
        assertTrue(e.getMessage().contains("the network holds the state after 2 completed steps of this fit "
                + "(iteration 2, epoch 0)"), e.getMessage());
        assertNotNull(e.getCause(), "Spark's exception is the cause");
        assertEquals(2, e.report().stepCount());

        // The same network trained by fit on global batches 0 and 1 only
        MultiLayerNetwork local = failingNet(false);
        Equivalence.Recorder localEvents = new Equivalence.Recorder();
        local.setListeners(localEvents);
        List<DataSet> global = TestData.globalBatches(parts, b);
        local.fit(new ExistingDataSetIterator(global.subList(0, 2)));
        local.setEpochCount(0);  // fit(iterator) ends the epoch; the failed Spark fit did not
        localEvents.events.remove(localEvents.events.size() - 1);  // nor did it call onEpochEnd
        assertEquals(2, net.getIterationCount());
        assertEquals(0, net.getEpochCount());
        Equivalence.assertMatches(net.getLayers(), local.getLayers(), before, events, localEvents,
                net.getUpdater().getStateViewArray(), local.getUpdater().getStateViewArray(), e.report());

        // and training goes on from there: the rest of the data trains as on a fresh fit
        parts.get(1).get(0).getFeatures().getRow(5).assign(0.5);
        SparkFitReport next = LoraSpark.fit(sc, net, TestData.rdd(sc, parts), b, 1);
        assertEquals(4, next.stepCount());
        assertEquals(6, net.getIterationCount());
    }

    @Test
    void aNonFiniteGradientIsRefusedAndTheStepNotApplied() {
        // A row in step 1 makes fc1's backward pass NaN (as an overflow would).
        int b = 2;
        List<List<DataSet>> parts = poisoned(3, 1e4);  // partition 1, row 3: in step 1
        MultiLayerNetwork net = failingNet(true);
        SparkFitException e = assertThrows(SparkFitException.class,
                () -> LoraSpark.fit(sc, net, TestData.rdd(sc, parts), b, 1));
        assertTrue(e.getMessage().startsWith("step 1 of epoch 0 (iteration 1) gave a non-finite gradient ("),
                e.getMessage());
        assertTrue(e.getMessage().contains("of the adapters of [fc1, out]"), e.getMessage());
        assertNull(e.getCause());
        assertEquals(1, e.report().stepCount());
        assertEquals(1, net.getIterationCount());

        MultiLayerNetwork local = failingNet(true);
        local.fit(TestData.globalBatches(parts, b).get(0));
        for (String key : List.of("0.loraA", "0.loraB", "2.loraA", "2.loraB")) {
            String[] k = key.split("\\.");
            double err = Equivalence.relativeError(
                    Equivalence.bits(net.getLayer(Integer.parseInt(k[0])).getParam(k[1])),
                    Equivalence.bits(local.getLayer(Integer.parseInt(k[0])).getParam(k[1])));
            assertTrue(err <= Equivalence.TOLERANCE, key + ": " + err);
        }
        double err = Equivalence.relativeError(Equivalence.bits(net.getUpdater().getStateViewArray()),
                Equivalence.bits(local.getUpdater().getStateViewArray()));
        assertTrue(err <= Equivalence.TOLERANCE, "updater state: " + err);
    }

    @Test
    void anUpdateThatFailsOnTheDriverIsRolledBack() {
        // Adam fails in the driver's update of iteration 2, after changing its state and the gradient.
        int b = 2;
        List<List<DataSet>> parts = TestData.partitions(DataType.DOUBLE, new int[][] {{4, 4}, {6}});
        MultiLayerNetwork net = TestData.loraMln(DataType.DOUBLE, new FailingAdam(0.02, 2));
        SparkFitException e = assertThrows(SparkFitException.class,
                () -> LoraSpark.fit(sc, net, TestData.rdd(sc, parts), b, 1));
        assertTrue(e.getMessage().startsWith("step 2 of epoch 0 (iteration 2): the driver's update failed: "
                + "java.lang.IllegalStateException: FailingAdam: failing at iteration 2"), e.getMessage());
        assertEquals(2, e.report().stepCount());
        assertEquals(2, net.getIterationCount());

        MultiLayerNetwork local = TestData.loraMln(DataType.DOUBLE, new org.nd4j.linalg.learning.config.Adam(0.02));
        local.fit(new ExistingDataSetIterator(TestData.globalBatches(parts, b).subList(0, 2)));
        for (int i : new int[] {0, 2}) {
            for (String key : new String[] {"loraA", "loraB"}) {
                double err = Equivalence.relativeError(Equivalence.bits(net.getLayer(i).getParam(key)),
                        Equivalence.bits(local.getLayer(i).getParam(key)));
                assertTrue(err <= Equivalence.TOLERANCE, i + " " + key + ": " + err);
            }
        }
        double err = Equivalence.relativeError(Equivalence.bits(net.getUpdater().getStateViewArray()),
                Equivalence.bits(local.getUpdater().getStateViewArray()));
        assertTrue(err <= Equivalence.TOLERANCE, "updater state: " + err);
    }

    @Test
    void aFailureBeforeTheFirstStepChangesNothing() {
        MultiLayerNetwork net = failingNet(false);
        NetworkState before = NetworkState.of(net);
        List<List<DataSet>> parts = new ArrayList<>(poisoned(0, 1e4));  // fails in step 0
        SparkFitException e = assertThrows(SparkFitException.class,
                () -> LoraSpark.fit(sc, net, TestData.rdd(sc, parts), 2, 1));
        assertEquals(0, e.report().stepCount());
        // the updater exists now (fit creates it before the first step), but holds its initial state
        assertEquals(before.iteration(), net.getIterationCount());
        for (Map.Entry<String, double[]> p : before.params().entrySet()) {
            org.junit.jupiter.api.Assertions.assertArrayEquals(p.getValue(),
                    Equivalence.snapshot(net.getLayers()).get(p.getKey()), p.getKey());
        }
    }
}
