package io.github.lora4j.spark;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.github.lora4j.spark.Equivalence.Recorder;
import java.util.List;
import java.util.Map;
import net.jqwik.api.Assume;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.Size;
import org.deeplearning4j.datasets.iterator.ExistingDataSetIterator;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Sgd;

/**
 * For any partition layout (1-4 partitions, each 0-3 DataSets of 1-5 rows), batch size, epoch count, updater and
 * minibatch flag: LoraSpark.fit equals fit on the global batches within 1e-10 relative, and W, b are bitwise
 * unchanged.
 */
class LoraSparkEquivalenceProperties {

    @Property(tries = 12)
    void fitEqualsLocalFitOnTheGlobalBatches(
            @ForAll @Size(min = 1, max = 4) List<@Size(max = 3) List<@IntRange(min = 1, max = 5) Integer>> layout,
            @ForAll @IntRange(min = 1, max = 4) int b, @ForAll @IntRange(min = 1, max = 2) int epochs,
            @ForAll boolean adam, @ForAll boolean miniBatch) {
        Assume.that(layout.stream().mapToInt(List::size).sum() > 0);
        int[][] sizes = layout.stream().map(p -> p.stream().mapToInt(Integer::intValue).toArray())
                .toArray(int[][]::new);
        IUpdater updater = adam ? LoraSparkEquivalenceTest.adamByIteration() : new Sgd(0.05);
        MultiLayerNetwork spark = net(updater, miniBatch);
        MultiLayerNetwork local = net(updater.clone(), miniBatch);
        assertArrayEquals(Equivalence.bits(local.params()), Equivalence.bits(spark.params()));
        Map<String, double[]> before = Equivalence.snapshot(spark.getLayers());
        Recorder sparkEvents = new Recorder();
        Recorder localEvents = new Recorder();
        spark.setListeners(sparkEvents);
        local.setListeners(localEvents);

        List<List<DataSet>> parts = TestData.partitions(DataType.DOUBLE, sizes);
        SparkFitReport report = LoraSpark.fit(SparkTests.sc(), spark, TestData.rdd(SparkTests.sc(), parts), b,
                epochs);
        List<DataSet> global = TestData.globalBatches(parts, b);
        local.fit(new ExistingDataSetIterator(global), epochs);

        assertEquals(local.getIterationCount(), spark.getIterationCount());
        Equivalence.assertMatches(spark.getLayers(), local.getLayers(), before, sparkEvents, localEvents,
                spark.getUpdater().getStateViewArray() == null ? spark.params() : spark.getUpdater()
                        .getStateViewArray(),
                local.getUpdater().getStateViewArray() == null ? local.params() : local.getUpdater()
                        .getStateViewArray(), report);
    }

    private static MultiLayerNetwork net(IUpdater updater, boolean miniBatch) {
        MultiLayerConfiguration conf = TestData.mlnConf(DataType.DOUBLE, updater).build();
        conf.getConfs().forEach(c -> c.setMiniBatch(miniBatch));
        return TestData.lora(conf);
    }
}
