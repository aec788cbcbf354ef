package io.github.lora4j.spark;


import io.github.lora4j.spark.Equivalence.Twins;
import java.util.List;
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
        Twins<MultiLayerNetwork> t = new Twins<>(() -> net(updater.clone(), miniBatch));

        List<List<DataSet>> parts = TestData.partitions(DataType.DOUBLE, sizes);
        SparkFitReport report = LoraSpark.fit(SparkTests.sc(), t.spark, TestData.rdd(SparkTests.sc(), parts), b,
                epochs);
        t.local.fit(new ExistingDataSetIterator(TestData.globalBatches(parts, b)), epochs);
        t.assertMatch(report);
    }

    private static MultiLayerNetwork net(IUpdater updater, boolean miniBatch) {
        MultiLayerConfiguration conf = TestData.mlnConf(DataType.DOUBLE, updater).build();
        conf.getConfs().forEach(c -> c.setMiniBatch(miniBatch));
        return TestData.lora(conf);
    }
}
