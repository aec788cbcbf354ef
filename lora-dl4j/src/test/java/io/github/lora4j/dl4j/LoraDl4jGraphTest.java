package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** ComputationGraph support, and untargeted layers of other kinds (frozen by FrozenLayerWithBackprop). */
class LoraDl4jGraphTest {

    @org.junit.jupiter.api.io.TempDir
    Path tmp;

    private static final LoraConfig CONFIG = LoraConfig.builder().rank(2).alpha(4).build();

    private static Map<String, INDArray> params(org.deeplearning4j.nn.api.Layer[] layers) {
        Map<String, INDArray> out = new LinkedHashMap<>();
        for (org.deeplearning4j.nn.api.Layer l : layers) {
            l.paramTable().forEach((k, v) -> out.put(l.conf().getLayer().getLayerName() + "_" + k, v.dup()));
        }
        return out;
    }

    @Test
    void aGraphTrainsLoraOnlySavesItsAdapterAndUnloadsToPlainLayers() throws java.io.IOException {
        ComputationGraph base = Nets.graph(DataType.FLOAT, new Adam(0.01), 3);
        DataSet data = Nets.task(DataType.FLOAT, 5, 6, 64);
        base.fit(data);
        INDArray baseParams = base.params().dup();
        INDArray baseUpdater = base.getUpdater().getStateViewArray().dup();
        INDArray expected = base.outputSingle(data.getFeatures());

        ComputationGraph lora = LoraDl4j.apply(base, CONFIG, "fc1", "out");

        assertBitwise(expected, lora.outputSingle(data.getFeatures()), "output at init");
        Map<String, INDArray> before = params(lora.getLayers());
        for (int i = 0; i < 5; i++) {
            lora.fit(data);
        }
        Map<String, INDArray> after = params(lora.getLayers());
        before.forEach((k, v) -> {
            if (k.endsWith("_W") || k.endsWith("_b")) {
                assertBitwise(v, after.get(k), k + " after fit");
            } else {
                assertFalse(v.equals(after.get(k)), k + " should have been trained");
            }
        });
        long loraParams = 2 * (Nets.IN + Nets.HIDDEN) + 2 * (Nets.HIDDEN + 4 + Nets.CLASSES);
        assertEquals(loraParams, LoraDl4j.trainableParameterCount(lora));
        assertEquals(new Adam().stateSize(loraParams), lora.getUpdater().getStateViewArray().length(), "updater state");
        assertBitwise(baseParams, base.params(), "given graph's parameters");
        assertBitwise(baseUpdater, base.getUpdater().getStateViewArray(), "given graph's updater state");

        Path dir = tmp.resolve("graph-adapter");
        LoraDl4j.saveAdapter(lora, dir);
        assertEquals(java.util.List.of("fc1", "out"), io.github.lora4j.io.PeftAdapterFiles.read(dir).modules());
        ComputationGraph fresh = LoraDl4j.apply(base, CONFIG, "fc1", "out");
        LoraDl4j.loadAdapter(fresh, dir);
        assertBitwise(lora.outputSingle(data.getFeatures()), fresh.outputSingle(data.getFeatures()),
                "graph outputs after loadAdapter");

        ComputationGraph plain = LoraDl4j.mergeAndUnload(lora);
        assertFalse(plain.getConfiguration().toJson().contains("io.github.lora4j"), "plain DL4J configuration");
        INDArray loraOut = lora.outputSingle(data.getFeatures());
        INDArray plainOut = plain.outputSingle(data.getFeatures());
        assertTrue(loraOut.equalsWithEps(plainOut, 1e-5), "max difference " + loraOut.sub(plainOut).amaxNumber());
    }

    @Test
    void untargetedLayersOfOtherKindsAreFrozenWithoutUpdaterState() {
        MultiLayerNetwork base = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().seed(4)
                .updater(new Adam(0.01)).list()
                .layer(new DenseLayer.Builder().nIn(Nets.IN).nOut(8).activation(Activation.TANH).build())
                .layer(new DenseLayer.Builder().nIn(8).nOut(8).hasLayerNorm(true).activation(Activation.TANH).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(8).nOut(Nets.CLASSES)
                        .activation(Activation.SOFTMAX).build())
                .build());
        base.init();
        DataSet data = Nets.task(DataType.FLOAT, 5, 6, 64);
        base.fit(data);
        INDArray expected = base.output(data.getFeatures());

        MultiLayerNetwork lora = LoraDl4j.apply(base, CONFIG, "layer0");

        assertBitwise(expected, lora.output(data.getFeatures()), "output at init");
        assertInstanceOf(org.deeplearning4j.nn.layers.FrozenLayerWithBackprop.class, lora.getLayer(1));
        Map<String, INDArray> before = params(lora.getLayers());
        lora.fit(data);
        lora.fit(data);
        Map<String, INDArray> after = params(lora.getLayers());
        before.forEach((k, v) -> {
            if (!k.endsWith("_loraA") && !k.endsWith("_loraB")) {
                assertBitwise(v, after.get(k), k + " after fit");
            }
        });
        assertEquals(new Adam().stateSize(2 * (Nets.IN + 8)), lora.getUpdater().getStateViewArray().length(),
                "updater state of layer0's loraA and loraB only");
    }

    /**
     * Issue 30 item 6 in a graph: a dense layer per time step and an RnnOutputLayer carry LoRA, with a frozen LSTM and
     * a SelfAttentionLayer (SameDiff-defined) untargeted between them; fit() trains the adapters alone. (DL4J's own
     * BatchNormalization cannot take recurrent input; the feed-forward graph below has one.)
     */
    @Test
    void aGraphWithRecurrentAndAttentionLayersTrainsItsAdaptersAlone() {
        assertTrainsAdaptersAlone(new NeuralNetConfiguration.Builder().seed(6)
                .updater(new Adam(0.05)).weightDecay(1e-3).graphBuilder()
                .addInputs("in")
                .setInputTypes(org.deeplearning4j.nn.conf.inputs.InputType.recurrent(4, 5))
                .addLayer("fc", new DenseLayer.Builder().nOut(6).activation(Activation.TANH).build(), "in")
                .addLayer("lstm", new org.deeplearning4j.nn.conf.layers.LSTM.Builder().nOut(6).build(), "fc")
                .addLayer("attn", new org.deeplearning4j.nn.conf.layers.SelfAttentionLayer.Builder().nOut(6).nHeads(2)
                        .headSize(3).projectInput(true).build(), "lstm")
                .addLayer("out", new org.deeplearning4j.nn.conf.layers.RnnOutputLayer.Builder(
                        LossFunctions.LossFunction.MCXENT).nOut(3).activation(Activation.SOFTMAX).build(), "attn")
                .setOutputs("out").build(), true);
    }

    @Test
    void aGraphWithAnUntargetedBatchNormalizationTrainsItsAdaptersAlone() {
        assertTrainsAdaptersAlone(new NeuralNetConfiguration.Builder().seed(6)
                .updater(new Adam(0.05)).weightDecay(1e-3).graphBuilder()
                .addInputs("in")
                .setInputTypes(org.deeplearning4j.nn.conf.inputs.InputType.feedForward(Nets.IN))
                .addLayer("fc", new DenseLayer.Builder().nOut(8).activation(Activation.TANH).build(), "in")
                .addLayer("bn", new org.deeplearning4j.nn.conf.layers.BatchNormalization.Builder().build(), "fc")
                .addLayer("out", new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nOut(Nets.CLASSES)
                        .activation(Activation.SOFTMAX).build(), "bn")
                .setOutputs("out").build(), false);
    }

    private static void assertTrainsAdaptersAlone(org.deeplearning4j.nn.conf.ComputationGraphConfiguration conf,
            boolean recurrent) {
        ComputationGraph base = new ComputationGraph(conf);
        base.init();
        DataSet data = recurrent ? LoraDl4jRnnTest.task(DataType.FLOAT, org.deeplearning4j.nn.conf.RNNFormat.NCW, 1, 2,
                16) : Nets.task(DataType.FLOAT, 1, 2, 16);
        INDArray expected = base.outputSingle(data.getFeatures());

        ComputationGraph lora = LoraDl4j.apply(base, CONFIG, "fc", "out");

        if (recurrent) {
            assertInstanceOf(LoraRnnOutputLayerImpl.class, lora.getLayer("out"));
        } else {
            assertInstanceOf(FrozenBatchNormalizationImpl.class, lora.getLayer("bn"));
        }
        assertBitwise(expected, lora.outputSingle(data.getFeatures()), "output at init");
        Map<String, INDArray> before = new LinkedHashMap<>();
        for (org.deeplearning4j.nn.api.Layer l : lora.getLayers()) {
            l.paramTable().forEach((k, v) -> before.put(l.conf().getLayer().getLayerName() + "_" + k, v.dup()));
        }
        double start = lora.score(data);
        for (int i = 0; i < 10; i++) {
            lora.fit(data);
        }
        assertTrue(lora.score(data) < start, "loss " + start + " -> " + lora.score(data));
        for (org.deeplearning4j.nn.api.Layer l : lora.getLayers()) {
            l.paramTable().forEach((k, v) -> {
                String key = l.conf().getLayer().getLayerName() + "_" + k;
                if (k.startsWith("lora")) {
                    assertFalse(before.get(key).equals(v), key + " trains");
                } else {
                    assertBitwise(before.get(key), v, key + " stays frozen");
                }
            });
        }
    }
}
