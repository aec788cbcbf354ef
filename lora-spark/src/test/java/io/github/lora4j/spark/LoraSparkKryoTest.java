package io.github.lora4j.spark;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.apache.spark.api.java.JavaSparkContext;
import org.deeplearning4j.datasets.iterator.ExistingDataSetIterator;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.dataset.DataSet;

/**
 * With Kryo as Spark's serializer (a common setting), what lora-spark itself sends (the network, A and B, gradient
 * sums, shuffled batches) still travels and the fit is still fit's.
 */
class LoraSparkKryoTest {

    @Test
    void withoutTheRegistratorKryoBreaksTheRowsAndTheFitSaysSo() {
        SparkTests.sc().stop();
        JavaSparkContext kryo = new JavaSparkContext(SparkTests.conf("local[2]", "lora4j-kryo")
                .set("spark.serializer", "org.apache.spark.serializer.KryoSerializer"));
        try {
            MultiLayerNetwork net = TestData.loraMln(DataType.DOUBLE, new org.nd4j.linalg.learning.config.Sgd(0.1));
            NetworkState before = NetworkState.of(net);
            IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(
                    IllegalArgumentException.class, () -> LoraSpark.fit(kryo, net,
                            TestData.rdd(kryo, TestData.partitions(DataType.DOUBLE, new int[][] {{3}, {2}})), 2, 1));
            assertTrue(e.getMessage().matches("partition [01], element 0: features arrived without its shape or data: "
                    + "it was serialised by Kryo.*"), e.getMessage());
            assertTrue(e.getMessage().contains("spark.kryo.registrator=io.github.lora4j.spark.LoraKryoRegistrator"));
            before.assertSame(net);
        } finally {
            kryo.stop();
        }
    }

    @Test
    void fitUnderKryo() {
        SparkTests.sc().stop();
        JavaSparkContext kryo = new JavaSparkContext(SparkTests.conf("local[2]", "lora4j-kryo")
                .set("spark.serializer", "org.apache.spark.serializer.KryoSerializer")
                .set("spark.kryo.registrator", LoraKryoRegistrator.class.getName()));
        try {
            // big enough to be shuffled in place (the shuffle then writes the batches with Kryo)
            List<List<DataSet>> parts = TestData.partitions(DataType.DOUBLE, new int[][] {{1500}, {700, 800}});
            MultiLayerNetwork spark = TestData.loraMln(DataType.DOUBLE, LoraSparkEquivalenceTest.adamByIteration());
            MultiLayerNetwork local = TestData.loraMln(DataType.DOUBLE, LoraSparkEquivalenceTest.adamByIteration());
            SparkFitReport r = LoraSpark.fit(kryo, spark, TestData.rdd(kryo, parts), 500, 2);
            assertTrue(r.inputReshuffled());
            local.fit(new ExistingDataSetIterator(TestData.globalBatches(parts, 500)), 2);
            for (int i : new int[] {0, 2}) {
                for (String key : new String[] {"loraA", "loraB"}) {
                    double err = Equivalence.relativeError(Equivalence.bits(spark.getLayer(i).getParam(key)),
                            Equivalence.bits(local.getLayer(i).getParam(key)));
                    assertTrue(err <= Equivalence.TOLERANCE, i + " " + key + ": " + err);
                }
            }
            // and the outputs come back (Kryo serialises the results)
            List<org.nd4j.linalg.api.ndarray.INDArray> in = List.of(TestData.gaussian(1, 3, TestData.IN),
                    TestData.gaussian(2, 4, TestData.IN));
            List<org.nd4j.linalg.api.ndarray.INDArray> out = LoraSpark.output(kryo, spark, kryo.parallelize(in, 2))
                    .collect();
            for (int k = 0; k < in.size(); k++) {
                assertTrue(Equivalence.relativeError(Equivalence.bits(out.get(k)),
                        Equivalence.bits(spark.output(in.get(k)))) <= 1e-12, "output " + k);
            }
        } finally {
            kryo.stop();
        }
    }
}
