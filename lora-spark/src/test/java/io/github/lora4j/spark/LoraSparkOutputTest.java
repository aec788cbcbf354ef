package io.github.lora4j.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.dl4j.LoraDl4j;
import java.util.ArrayList;
import java.util.List;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;

/** LoraSpark.output: the network's outputs, in order, from one broadcast of the merged network. */
class LoraSparkOutputTest {

    private final JavaSparkContext sc = SparkTests.sc();

    /** A LoRA network with B ≠ 0, so the adapter changes the outputs. */
    private static MultiLayerNetwork trained() {
        MultiLayerNetwork net = TestData.loraMln(DataType.DOUBLE, new Adam(0.05));
        for (int i = 0; i < 5; i++) {
            net.fit(TestData.rows(DataType.DOUBLE, i, 16));
        }
        return net;
    }

    @Test
    void outputsEqualTheNetworksOwnInOrder() {
        MultiLayerNetwork net = trained();
        NetworkState before = NetworkState.of(net);
        List<List<INDArray>> parts = new ArrayList<>();
        long seed = 40;
        for (int[] sizes : new int[][] {{1, 3}, {4}, {2, 1, 5}}) {
            List<INDArray> part = new ArrayList<>();
            for (int n : sizes) {
                part.add(TestData.gaussian(seed++, n, TestData.IN));
            }
            parts.add(part);
        }
        List<INDArray> out = LoraSpark.output(sc, net, TestData.rdd(sc, parts)).collect();
        List<INDArray> in = parts.stream().flatMap(List::stream).toList();
        assertEquals(in.size(), out.size());
        MultiLayerNetwork base = TestData.lora(TestData.mlnConf(DataType.DOUBLE, new Adam(0.05)).build());
        for (int i = 0; i < in.size(); i++) {
            double[] expected = Equivalence.bits(net.output(in.get(i)));
            assertTrue(Equivalence.relativeError(Equivalence.bits(out.get(i)), expected) <= 1e-12, "element " + i);
            // the adapter matters: the base network's output differs
            assertTrue(Equivalence.relativeError(Equivalence.bits(base.output(in.get(i))), expected) > 1e-6);
        }
        before.assertSame(net);
        assertFalse(LoraDl4j.isMerged(net));
    }

    @Test
    void graphOutputsEqualTheGraphsOwn() {
        ComputationGraph graph = TestData.loraGraph(DataType.DOUBLE, new Adam(0.05));
        for (int i = 0; i < 3; i++) {
            graph.fit(TestData.graphRows(DataType.DOUBLE, i, 8));
        }
        List<INDArray[]> in = new ArrayList<>();
        for (int i = 0; i < 5; i++) {
            in.add(TestData.graphRows(DataType.DOUBLE, 70 + i, 1 + i).getFeatures());
        }
        List<INDArray[]> out = LoraSpark.outputGraph(sc, graph, sc.parallelize(in, 2)).collect();
        for (int i = 0; i < in.size(); i++) {
            INDArray[] expected = graph.output(in.get(i));
            assertEquals(2, out.get(i).length, "one array per graph output");
            for (int k = 0; k < 2; k++) {
                assertTrue(Equivalence.relativeError(Equivalence.bits(out.get(i)[k]),
                        Equivalence.bits(expected[k])) <= 1e-12, "element " + i + ", output " + k);
            }
        }
    }

    @Test
    void aMergedNetworkGivesTheSameOutputs() {
        MultiLayerNetwork net = trained();
        List<INDArray> in = List.of(TestData.gaussian(1, 3, TestData.IN), TestData.gaussian(2, 2, TestData.IN));
        List<INDArray> unmerged = LoraSpark.output(sc, net, sc.parallelize(in, 2)).collect();
        LoraDl4j.merge(net);
        List<INDArray> merged = LoraSpark.output(sc, net, sc.parallelize(in, 2)).collect();
        assertTrue(LoraDl4j.isMerged(net), "still merged: output does not change the network");
        for (int i = 0; i < in.size(); i++) {
            assertTrue(Equivalence.relativeError(Equivalence.bits(merged.get(i)),
                    Equivalence.bits(unmerged.get(i))) <= 1e-12);
        }
    }

    @Test
    void featuresOfTheWrongWidthFailTheActionWithAClearMessage() {
        MultiLayerNetwork net = trained();
        JavaRDD<INDArray> bad = sc.parallelize(List.of(Nd4j.rand(DataType.DOUBLE, 2, 6),
                Nd4j.rand(DataType.DOUBLE, 2, 5)), 1);
        JavaRDD<INDArray> out = LoraSpark.output(sc, net, bad);  // lazy: nothing fails yet
        Exception e = assertThrows(Exception.class, out::collect);
        assertTrue(e.getMessage().contains("partition 0, element 1: expected features of shape [rows, 6] (nIn of "
                + "layer 'fc1' (index 0)), got [2, 5]"), e.getMessage());
    }

    @Test
    void aNetworkWithoutLoraLayersIsRefused() {
        MultiLayerNetwork plain = new MultiLayerNetwork(TestData.mlnConf(DataType.DOUBLE, new Adam(0.1)).build());
        plain.init();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraSpark.output(sc, plain, sc.parallelize(List.of(Nd4j.rand(DataType.DOUBLE, 1, 6)))));
        assertTrue(e.getMessage().contains("expected a network made by LoraDl4j.apply"), e.getMessage());
    }
}
