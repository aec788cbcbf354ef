package io.github.lora4j.spark;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Map;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.api.ndarray.INDArray;

/** Everything training can change in a network, bitwise: parameters, updater state, counters, score. */
record NetworkState(Map<String, double[]> params, double[] updater, int iteration, int epoch, double score) {

    static NetworkState of(Model net) {
        if (net instanceof MultiLayerNetwork m) {
            INDArray u = m.getUpdater(false) == null ? null : m.getUpdater(false).getStateViewArray();
            return new NetworkState(Equivalence.snapshot(m.getLayers()), u == null ? null : Equivalence.bits(u),
                    m.getIterationCount(), m.getEpochCount(), m.score());
        }
        ComputationGraph g = (ComputationGraph) net;
        INDArray u = g.getUpdater(false) == null ? null : g.getUpdater(false).getStateViewArray();
        return new NetworkState(Equivalence.snapshot(g.getLayers()), u == null ? null : Equivalence.bits(u),
                g.getIterationCount(), g.getEpochCount(), g.score());
    }

    void assertSame(Model net) {
        NetworkState now = of(net);
        assertEquals(params.keySet(), now.params.keySet());
        for (Map.Entry<String, double[]> e : params.entrySet()) {
            assertArrayEquals(e.getValue(), now.params.get(e.getKey()), e.getKey() + " changed");
        }
        assertArrayEquals(updater, now.updater, "updater state changed");
        assertEquals(iteration, now.iteration, "iteration count changed");
        assertEquals(epoch, now.epoch, "epoch count changed");
        assertEquals(Double.doubleToLongBits(score), Double.doubleToLongBits(now.score), "score changed");
    }
}
