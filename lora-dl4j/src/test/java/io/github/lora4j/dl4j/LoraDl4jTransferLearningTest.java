package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import java.io.File;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.graph.FrozenVertex;
import org.deeplearning4j.nn.conf.layers.BatchNormalization;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.misc.FrozenLayer;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.transferlearning.TransferLearning;
import org.deeplearning4j.util.ModelSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/**
 * Issue 29 item 19: networks built with DL4J's TransferLearning (whose frozen layers are {@link FrozenLayer}s, which
 * pass no gradient) could not be adapted. Now an untargeted frozen layer below every adapted layer stays as it is; one
 * above an adapted layer is frozen the lora4j way, so that gradients reach the adapter; a frozen layer may be targeted.
 */
class LoraDl4jTransferLearningTest {

    private static final LoraConfig CONFIG = LoraConfig.builder().rank(2).alpha(4).build();
    private static final DataSet DATA = Nets.task(DataType.FLOAT, 5, 6, 64);

    @TempDir
    Path tmp;

    /** Nets.mln with layers 0..{@code frozenUpTo} frozen by TransferLearning's feature extractor. */
    private static MultiLayerNetwork transferred(int frozenUpTo) {
        MultiLayerNetwork base = Nets.mln(DataType.FLOAT, new Adam(0.02), 9);
        base.fit(DATA);
        return new TransferLearning.Builder(base).setFeatureExtractor(frozenUpTo).build();
    }

    @Test
    void frozenLayersBelowTheAdaptedOnesStayFrozenAndTheNetworkTrainsItsAdaptersOnly() throws IOException {
        MultiLayerNetwork tl = transferred(0);
        assertInstanceOf(FrozenLayer.class, tl.getLayerWiseConfigurations().getConf(0).getLayer());
        INDArray expected = tl.output(DATA.getFeatures());
        Map<String, INDArray> before = LoraDl4jTest.params(tl);

        MultiLayerNetwork lora = LoraDl4j.apply(tl, CONFIG, "layer1", "layer2");

        assertInstanceOf(FrozenLayer.class, lora.getLayerWiseConfigurations().getConf(0).getLayer(), "kept as it is");
        assertBitwise(expected, lora.output(DATA.getFeatures()), "output at init");
        assertEquals(2 * 2L * ((10 + 10) + (10 + 3)), lora.getUpdater().getStateViewArray().length(),
                "Adam state for loraA/loraB of layer1 and layer2 only");
        lora.fit(DATA);
        lora.fit(DATA);
        assertNotEquals(0.0, lora.getLayer(1).getParam("loraB").amaxNumber().doubleValue(), "layer1's adapter trains");
        for (int i = 0; i < 3; i++) {
            assertBitwise(before.get(i + "_W"), lora.getLayer(i).getParam("W"), "W of layer " + i);
            assertBitwise(before.get(i + "_b"), lora.getLayer(i).getParam("b"), "b of layer " + i);
        }
        File zip = tmp.resolve("tl.zip").toFile();
        ModelSerializer.writeModel(lora, zip, true);
        MultiLayerNetwork restored = ModelSerializer.restoreMultiLayerNetwork(zip, true);
        assertEquals(lora.getLayerWiseConfigurations(), restored.getLayerWiseConfigurations());
        assertBitwise(lora.output(DATA.getFeatures()), restored.output(DATA.getFeatures()), "restored outputs");
    }

    @Test
    void aFrozenLayerAboveAnAdaptedOnePassesItsGradientAndATargetedFrozenLayerIsAdapted() {
        MultiLayerNetwork tl = transferred(1);                   // layers 0 and 1 frozen
        Map<String, INDArray> before = LoraDl4jTest.params(tl);
        INDArray expected = tl.output(DATA.getFeatures());

        MultiLayerNetwork lora = LoraDl4j.apply(tl, CONFIG, "layer0");

        assertInstanceOf(LoraDenseLayerImpl.class, lora.getLayer(0), "the targeted frozen layer");
        assertInstanceOf(LoraDenseLayerImpl.class, lora.getLayer(1), "the frozen layer above it, frozen the lora4j way");
        assertBitwise(expected, lora.output(DATA.getFeatures()), "output at init");
        lora.fit(DATA);
        lora.fit(DATA);
        assertNotEquals(0.0, lora.getLayer(0).getParam("loraB").amaxNumber().doubleValue(),
                "layer0's adapter gets a gradient through frozen layer1");
        for (int i = 0; i < 3; i++) {
            assertBitwise(before.get(i + "_W"), lora.getLayer(i).getParam("W"), "W of layer " + i);
        }
        // mergeAndUnload gives TransferLearning's frozen layers back, with the update merged
        MultiLayerNetwork plain = LoraDl4j.mergeAndUnload(lora);
        assertInstanceOf(FrozenLayer.class, plain.getLayerWiseConfigurations().getConf(0).getLayer());
        assertInstanceOf(FrozenLayer.class, plain.getLayerWiseConfigurations().getConf(1).getLayer());
        assertInstanceOf(OutputLayer.class, plain.getLayerWiseConfigurations().getConf(2).getLayer());
        assertTrue(lora.output(DATA.getFeatures()).equalsWithEps(plain.output(DATA.getFeatures()), 1e-5));
    }

    /**
     * Issue 30 item 6: a TransferLearning-frozen BatchNormalization above an adapted layer was refused (DL4J's frozen
     * wrappers pass it no gradient, or a wrong one); it now becomes a {@link FrozenBatchNormalization}, which passes
     * the gradient of its inference-mode map and keeps its statistics. One below every adapted layer is kept as it is.
     */
    @Test
    void aFrozenBatchNormalizationAboveAnAdaptedLayerPassesGradientsAndOneBelowIsKept() {
        MultiLayerNetwork base = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().seed(3)
                .updater(new Adam(0.01)).list()
                .layer(new DenseLayer.Builder().nIn(Nets.IN).nOut(8).activation(Activation.TANH).build())
                .layer(new BatchNormalization.Builder().nIn(8).nOut(8).build())
                .layer(new DenseLayer.Builder().nIn(8).nOut(8).activation(Activation.TANH).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(8).nOut(Nets.CLASSES)
                        .activation(Activation.SOFTMAX).build())
                .build());
        base.init();
        base.fit(DATA);
        MultiLayerNetwork tl = new TransferLearning.Builder(base).setFeatureExtractor(1).build();
        INDArray params = tl.params().dup();

        MultiLayerNetwork deep = LoraDl4j.apply(tl, CONFIG, "layer0");
        assertInstanceOf(FrozenBatchNormalization.class, deep.getLayerWiseConfigurations().getConf(1).getLayer());
        assertBitwise(tl.output(DATA.getFeatures()), deep.output(DATA.getFeatures()), "output at init");
        Map<String, INDArray> before = LoraDl4jTest.params(deep);
        deep.fit(DATA);
        deep.fit(DATA);
        assertNotEquals(0.0, deep.getLayer(0).getParam("loraB").amaxNumber().doubleValue(),
                "layer0's adapter gets a gradient through the frozen BatchNormalization");
        Map<String, INDArray> after = LoraDl4jTest.params(deep);
        assertEquals(List.of("1_gamma", "1_beta", "1_mean", "1_log10stdev"),
                before.keySet().stream().filter(k -> k.startsWith("1_")).toList(), "the BatchNormalization's parameters");
        before.forEach((k, v) -> {
            if (!k.endsWith("_loraA") && !k.endsWith("_loraB")) {
                assertBitwise(v, after.get(k), k + " after fit");
            }
        });
        MultiLayerNetwork plain = LoraDl4j.mergeAndUnload(deep);
        assertEquals(tl.getLayerWiseConfigurations().getConf(1).getLayer(),
                plain.getLayerWiseConfigurations().getConf(1).getLayer(), "mergeAndUnload gives the FrozenLayer back");

        MultiLayerNetwork lora = LoraDl4j.apply(tl, CONFIG, "layer2", "layer3");
        assertInstanceOf(FrozenLayer.class, lora.getLayerWiseConfigurations().getConf(1).getLayer());
        assertBitwise(tl.output(DATA.getFeatures()), lora.output(DATA.getFeatures()), "output at init");
        lora.fit(DATA);
        assertBitwise(params.get(org.nd4j.linalg.indexing.NDArrayIndex.interval(0, Nets.IN * 8 + 8)),
                lora.getLayer(0).params(), "frozen layer0 W and b");
    }

    /** A TransferLearning FrozenLayer without parameters above an adapted layer blocked its gradient: unwrapped now. */
    @Test
    void aFrozenLayerWithoutParametersAboveAnAdaptedLayerIsUnwrapped() {
        MultiLayerNetwork base = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().seed(3)
                .updater(new Adam(0.01)).list()
                .layer(new DenseLayer.Builder().nIn(Nets.IN).nOut(8).activation(Activation.IDENTITY).build())
                .layer(new org.deeplearning4j.nn.conf.layers.ActivationLayer.Builder().activation(Activation.TANH)
                        .build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(8).nOut(Nets.CLASSES)
                        .activation(Activation.SOFTMAX).build())
                .build());
        base.init();
        MultiLayerNetwork tl = new TransferLearning.Builder(base).setFeatureExtractor(1).build();
        assertInstanceOf(FrozenLayer.class, tl.getLayerWiseConfigurations().getConf(1).getLayer());

        MultiLayerNetwork lora = LoraDl4j.apply(tl, CONFIG, "layer0");

        assertInstanceOf(org.deeplearning4j.nn.conf.layers.ActivationLayer.class,
                lora.getLayerWiseConfigurations().getConf(1).getLayer(), "unwrapped");
        assertBitwise(tl.output(DATA.getFeatures()), lora.output(DATA.getFeatures()), "output at init");
        lora.fit(DATA);
        lora.fit(DATA);
        assertNotEquals(0.0, lora.getLayer(0).getParam("loraB").amaxNumber().doubleValue(),
                "layer0's adapter gets a gradient through the activation layer");
    }

    @Test
    void aGraphWithAFrozenFeatureExtractorIsAdaptedAndAFrozenVertexAboveAnAdaptedLayerPassesGradients() {
        ComputationGraph base = Nets.graph(DataType.FLOAT, new Adam(0.02), 4);
        base.fit(DATA);
        ComputationGraph tl = new TransferLearning.GraphBuilder(base).setFeatureExtractor("merge").build();
        assertInstanceOf(FrozenVertex.class, tl.getConfiguration().getVertices().get("merge"));
        INDArray expected = tl.outputSingle(DATA.getFeatures());

        ComputationGraph head = LoraDl4j.apply(tl, CONFIG, "out");
        assertInstanceOf(FrozenVertex.class, head.getConfiguration().getVertices().get("merge"), "kept");
        assertBitwise(expected, head.outputSingle(DATA.getFeatures()), "output at init");
        head.fit(DATA);

        ComputationGraph deep = LoraDl4j.apply(tl, CONFIG, "fc1", "out");
        assertBitwise(expected, deep.outputSingle(DATA.getFeatures()), "output at init");
        INDArray sideW = deep.getLayer("side").getParam("W").dup();
        deep.fit(DATA);
        deep.fit(DATA);
        assertNotEquals(0.0, deep.getLayer("fc1").getParam("loraB").amaxNumber().doubleValue(),
                "fc1's adapter gets a gradient through the frozen merge vertex");
        assertBitwise(sideW, deep.getLayer("side").getParam("W"), "frozen side layer's W");
    }
}
