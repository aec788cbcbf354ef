package io.github.lora4j.spark;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.github.lora4j.spark.Equivalence.Twins;
import java.util.List;
import java.util.Map;
import org.apache.spark.api.java.JavaSparkContext;
import org.deeplearning4j.datasets.iterator.ExistingDataSetIterator;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.MultiDataSet;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Nesterovs;
import org.nd4j.linalg.schedule.ExponentialSchedule;
import org.nd4j.linalg.schedule.MapSchedule;
import org.nd4j.linalg.schedule.ScheduleType;

/**
 * LoraSpark.fit equals DL4J's own {@code fit} on the global batches of the documented semantics (step t: every
 * partition's rows [t·b, (t+1)·b), concatenated in partition order), in double, within 1e-10 relative; W and b
 * bitwise unchanged.
 */
class LoraSparkEquivalenceTest {

    private final JavaSparkContext sc = SparkTests.sc();

    /** Adam whose learning rate follows the iteration count: wrong counting shows. */
    static IUpdater adamByIteration() {
        return new Adam(new MapSchedule(ScheduleType.ITERATION, Map.of(0, 0.05, 2, 0.03, 5, 0.01)));
    }

    /** Adam whose learning rate follows the epoch count. */
    static IUpdater adamByEpoch() {
        return new Adam(new ExponentialSchedule(ScheduleType.EPOCH, 0.05, 0.5));
    }

    @Test
    void multiLayerNetworkTwoUnevenPartitionsSeveralEpochs() {
        // partition 0: 8 rows in DataSets of 3, 1, 4; partition 1: 4 rows in two of 2. b = 3: steps of 6, 4, 2 rows.
        double err = fitBoth(adamByIteration(), new int[][] {{3, 1, 4}, {2, 2}}, 3, 3, false);
        System.out.println("MultiLayerNetwork, local[2], 2 partitions, 3 epochs: max relative error " + err);
    }

    @Test
    void multiLayerNetworkThreePartitionsEpochSchedule() {
        // 5, 3 and 9 rows; b = 2: 5 steps per epoch, partition 1 out after step 1, partition 0 after step 2.
        double err = fitBoth(adamByEpoch(), new int[][] {{5}, {1, 1, 1}, {7, 2}}, 2, 2, false);
        System.out.println("MultiLayerNetwork, local[2], 3 partitions, 2 epochs: max relative error " + err);
    }

    @Test
    void regularisationAndGradientClippingApplyOnceOnTheDriver() {
        // L2 on A and B and ClipL2PerLayer (threshold low enough to clip) act on the summed gradient, once.
        double err = fitBoth(new Nesterovs(0.1, 0.9), new int[][] {{4, 4}, {6}, {3}}, 3, 2, true);
        System.out.println("MultiLayerNetwork with L2 and ClipL2PerLayer: max relative error " + err);
    }

    @Test
    void computationGraphThreeUnevenPartitions() {
        int[][] sizes = {{2, 3}, {6}, {1}};
        int b = 2;
        int epochs = 2;
        Twins<ComputationGraph> t = new Twins<>(() -> TestData.loraGraph(DataType.DOUBLE, adamByIteration()));

        List<List<MultiDataSet>> parts = TestData.graphPartitions(DataType.DOUBLE, sizes);
        SparkFitReport report = LoraSpark.fit(sc, t.spark, TestData.rdd(sc, parts), b, epochs);
        List<MultiDataSet> global = TestData.globalGraphBatches(parts, b);
        t.local.fit(new ListMultiDataSetIterator(global), epochs);

        assertEquals(epochs * global.size(), report.stepCount());
        double err = t.assertMatch(report);
        System.out.println("ComputationGraph, local[2], 3 partitions, 2 epochs: max relative error " + err);
    }

    @Test
    void floatNetworkMatchesWithinFloatRounding() {
        // In FLOAT the partial sums round differently (about 1e-7 per addition); Adam's division by √v magnifies
        // differences in tiny gradients, so the bound is looser than double's.
        MultiLayerNetwork spark = TestData.loraMln(DataType.FLOAT, adamByIteration());
        MultiLayerNetwork local = TestData.loraMln(DataType.FLOAT, adamByIteration());
        double[] w = Equivalence.bits(spark.getLayer(0).getParam("W"));
        List<List<DataSet>> parts = TestData.partitions(DataType.FLOAT, new int[][] {{3, 1, 4}, {2, 2}, {5}});
        LoraSpark.fit(sc, spark, TestData.rdd(sc, parts), 3, 2);
        local.fit(new ExistingDataSetIterator(TestData.globalBatches(parts, 3)), 2);
        double worst = 0;
        for (int i : new int[] {0, 2}) {
            for (String key : new String[] {"loraA", "loraB"}) {
                worst = Math.max(worst, Equivalence.relativeError(Equivalence.bits(spark.getLayer(i).getParam(key)),
                        Equivalence.bits(local.getLayer(i).getParam(key))));
            }
        }
        org.junit.jupiter.api.Assertions.assertTrue(worst <= 1e-4, "FLOAT: relative error " + worst);
        assertArrayEquals(w, Equivalence.bits(spark.getLayer(0).getParam("W")), "W bitwise unchanged");
        System.out.println("FLOAT MultiLayerNetwork, 3 partitions, 2 epochs: max relative error " + worst);
    }

    /** Trains the same LoRA network with LoraSpark and with fit on the global batches, and compares. */
    double fitBoth(IUpdater updater, int[][] sizes, int b, int epochs, boolean regularised) {
        Twins<MultiLayerNetwork> t = new Twins<>(() -> regularised
                ? TestData.loraMlnRegularised(DataType.DOUBLE, updater.clone())
                : TestData.loraMln(DataType.DOUBLE, updater.clone()));

        List<List<DataSet>> parts = TestData.partitions(DataType.DOUBLE, sizes);
        SparkFitReport report = LoraSpark.fit(sc, t.spark, TestData.rdd(sc, parts), b, epochs);
        List<DataSet> global = TestData.globalBatches(parts, b);
        t.local.fit(new ExistingDataSetIterator(global), epochs);

        assertEquals(epochs * global.size(), report.stepCount());
        assertEquals(epochs * global.stream().mapToLong(DataSet::numExamples).sum(), report.examples());
        assertEquals(sizes.length, report.partitions());
        assertEquals(t.local.score(), t.spark.score(), Math.abs(t.local.score()) * Equivalence.TOLERANCE);
        return t.assertMatch(report);
    }
}
